//! The gateway binary's command-line tools, beside serving: `token` mints a
//! development token, `watch` is a resuming command-line client of `/ws`.
//!
//! Each subcommand owns its arguments (`clap::Args`) and the logic from arguments to
//! action, so `main.rs` stays a checklist.

pub mod token;
pub mod watch;
