//! Sizes of what every idle socket and every connected user holds: the futures of
//! their tasks and the state inside them (printed with `--nocapture`).

use std::mem::size_of;

use axum::extract::ws::WebSocket;

use crate::backend::NatsBackend;
use crate::session::native::NativeDialect;
use crate::session::{Session, SocketCtl};
use crate::socket::SocketStart;

/// The size of the future `f` returns, without calling it.
fn ret3<A, B, C, R>(_: impl FnOnce(A, B, C) -> R) -> usize {
    size_of::<R>()
}

fn ret5<A, B, C, D, E, R>(_: impl FnOnce(A, B, C, D, E) -> R) -> usize {
    size_of::<R>()
}

#[test]
fn print_sizes() {
    let rows = [
        (
            "SocketStart::serve (native)",
            ret3(SocketStart::serve::<NativeDialect>),
        ),
        (
            "session::run (native)",
            ret5(crate::session::run::<WebSocket, axum::Error, NatsBackend, NativeDialect>),
        ),
        (
            "Conn (native)",
            crate::session::conn_size::<WebSocket, NatsBackend, NativeDialect>(),
        ),
        ("signalr serve", crate::signalr::serve_future_size()),
        ("hub run_channel", crate::hub::channel_future_size()),
        ("SocketStart", size_of::<SocketStart>()),
        ("NativeDialect", size_of::<NativeDialect>()),
        ("Session<NatsBackend>", size_of::<Session<NatsBackend>>()),
        ("NatsBackend", size_of::<NatsBackend>()),
        ("cursors::Cursors", size_of::<crate::cursors::Cursors>()),
        ("store::EventStore", size_of::<crate::store::EventStore>()),
        ("tracking::Tracking", size_of::<crate::tracking::Tracking>()),
        (
            "jetstream::Context",
            size_of::<async_nats::jetstream::Context>(),
        ),
        ("async_nats::Client", size_of::<async_nats::Client>()),
        (
            "async_nats::Subscriber",
            size_of::<async_nats::Subscriber>(),
        ),
        ("async_nats::Message", size_of::<async_nats::Message>()),
        ("WebSocket", size_of::<WebSocket>()),
        ("SocketCtl", size_of::<SocketCtl>()),
        ("hub::Membership", size_of::<crate::hub::Membership>()),
        (
            "Arc<Event> queue item",
            size_of::<std::sync::Arc<crate::event::Event>>(),
        ),
        ("event::Event", size_of::<crate::event::Event>()),
        ("LiveReader", size_of::<crate::live::LiveReader>()),
    ];
    for (name, bytes) in rows {
        println!("{name:32} {bytes:>6} B");
    }
}
