//! NATS least privilege with the shipped `nats/auth.conf` (the real file, fresh
//! passwords): the operator provisions, the gateway and the worker run with their own
//! credentials and a job reaches a socket; then each credential is refused what it
//! must not do, asserted on the server's `Permissions Violation` for that subject. Last,
//! a password in the NATS URL never reaches a log line, even at `RUST_LOG=trace`.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use ziraai_e2e::*;

/// A client as `user` whose server errors (permission violations) the test reads.
struct Observed {
    client: async_nats::Client,
    errors: mpsc::Receiver<String>,
    user: &'static str,
}

impl Observed {
    async fn connect(nats: &NatsServer, user: &'static str) -> Self {
        let (tx, errors) = mpsc::channel(64);
        let opts = async_nats::ConnectOptions::with_user_and_password(
            user.to_owned(),
            nats.password(user).to_owned(),
        )
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    // A full channel only loses errors no test waits for.
                    let _ = tx.try_send(e.to_string());
                }
            }
        });
        let client = within(&format!("connect as {user}"), opts.connect(nats.url()))
            .await
            .unwrap_or_else(|e| panic!("{user} connects: {e}"));
        Self {
            client,
            errors,
            user,
        }
    }

    /// A JetStream context whose requests give up quickly (a denied request is
    /// never answered, so it ends in a time-out).
    fn js(&self) -> jetstream::Context {
        jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(500))
            .build(self.client.clone())
    }

    /// Waits for the server's violation of `what` (`Publish to "x"`,
    /// `Subscription to "x"`).
    async fn refused(&mut self, what: &str) {
        let wanted = format!("Permissions Violation for {what}");
        let user = self.user;
        within(&format!("{user}: {wanted}"), async {
            loop {
                let e = self.errors.recv().await.expect("client alive");
                if e.contains(&wanted) {
                    return;
                }
            }
        })
        .await;
    }

    async fn publish_refused(&mut self, subject: &str) {
        self.client
            .publish(subject.to_owned(), "forged".into())
            .await
            .expect("queued");
        self.client.flush().await.expect("flushed");
        self.refused(&format!("Publish to \"{subject}\"")).await;
    }

    async fn subscribe_refused(&mut self, subject: &str) {
        // The client cannot know: the server answers the SUB with an error.
        let _sub = self
            .client
            .subscribe(subject.to_owned())
            .await
            .expect("sent");
        self.client.flush().await.expect("flushed");
        self.refused(&format!("Subscription to \"{subject}\""))
            .await;
    }
}

/// A server with the shipped authorization and every definition applied by the operator.
async fn provisioned() -> NatsServer {
    let nats = NatsServer::start_with_auth().await;
    let js = jetstream::new(nats.client_as("operator").await);
    within(
        "operator provisions",
        ziraai_common::nats::provision(&js, None, 1, false),
    )
    .await
    .expect("the operator may apply every definition");
    nats
}

fn with(pairs: [(&'static str, String); 2]) -> Vec<(&'static str, String)> {
    pairs.into()
}

fn refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn services_run_with_their_own_credentials_and_a_job_reaches_a_socket() {
    let nats = provisioned().await;
    let gw_creds = with(nats.credentials("gateway"));
    let gateway = TestGateway::start_with(gateway_config(&nats, &refs(&gw_creds))).await;
    let analyzer = TestAnalyzer::start(Behaviour::default()).await;
    let worker_creds = with(nats.credentials("worker"));
    let _worker = TestWorker::start(worker_config(&nats, &analyzer, &refs(&worker_creds))).await;

    let u = user("perm");
    // A device id: the gateway reads and writes its cursor in CURSORS.
    let (mut socket, _) = WsClient::resume(&gateway.ws_url(), &u, "deviceId=d1").await;
    let platform = jetstream::new(nats.client_as("platform").await);
    let job_id = format!("j-{}", nuid::next());
    submit_job(
        &platform,
        json!({"jobId": job_id, "analysisId": "a-1", "userId": u, "imageUrl": "http://127.0.0.1/p.jpg"}),
    )
    .await;
    let event = socket.event().await;
    assert_eq!(
        event.id,
        format!("job-{job_id}"),
        "the job's event: {event:?}"
    );
    assert_eq!(event.kind, "analysis.completed");
    socket.ack(event.seq).await;
    // The cursor write went through with the gateway's credential: a resume from the
    // same device starts after the acknowledged event.
    let operator = jetstream::new(nats.client_as("operator").await);
    let cursors = within("CURSORS as operator", operator.get_key_value("CURSORS"))
        .await
        .expect("operator reads the bucket");
    let key = format!("{u}.d1");
    within("cursor written", async {
        loop {
            if let Ok(Some(v)) = cursors.get(&key).await
                && v.as_ref() == event.seq.to_string().as_bytes()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The per-user connection limit's entry for this socket (bucket CONNS) is written
    // at admission and removed when it closes, with the gateway's credential.
    let conns = within("KV_CONNS as operator", operator.get_stream("KV_CONNS"))
        .await
        .expect("operator reads the stream");
    let entries = format!("$KV.CONNS.u.{u}.>");
    let entry = within(
        "the socket's entry",
        conns.direct_get_next_for_subject(&entries, None),
    )
    .await;
    assert!(entry.is_ok(), "an open socket has its entry: {entry:?}");
    socket.close().await;
    within("the closed socket's entry removed", async {
        while conns
            .direct_get_next_for_subject(&entries, None)
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    gateway.shutdown().await.expect("clean stop");
}

#[tokio::test]
async fn each_credential_is_refused_what_it_must_not_do() {
    let nats = provisioned().await;
    let mut op = Observed::connect(&nats, "operator").await;
    let mut live = op
        .client
        .subscribe("live.>")
        .await
        .expect("operator reads live");
    op.client.flush().await.expect("flushed");

    // Gateway: no producer subjects, no job queue, no worker consumer.
    let mut gw = Observed::connect(&nats, "gateway").await;
    gw.publish_refused("live.victim").await;
    gw.publish_refused("notify.victim").await;
    gw.publish_refused("jobs.analysis").await;
    gw.publish_refused("$JS.API.STREAM.UPDATE.NOTIFY").await;
    gw.subscribe_refused("notify.>").await;
    assert!(
        gw.js()
            .publish("notify.victim", "forged".into())
            .await
            .expect("sent")
            .await
            .is_err(),
        "a JetStream publish to notify.* gets no PubAck"
    );
    gw.refused("Publish to \"notify.victim\"").await;

    // Gateways answer each other on ziraai.gateway.> (the eviction request).
    let other = Observed::connect(&nats, "gateway").await;
    let mut control = other
        .client
        .subscribe("ziraai.gateway.gw-b.evict")
        .await
        .expect("a gateway listens on its control subject");
    // The gateway's barrier: the server answers "no responders" once it has handled
    // every earlier command of this connection, the SUB included (a flush only writes).
    let barrier = other.client.request("_ZIRAAI.barrier.test", "".into());
    let barrier = within("barrier", barrier)
        .await
        .expect_err("nobody answers");
    assert_eq!(barrier.kind(), async_nats::RequestErrorKind::NoResponders);
    let responder = tokio::spawn(async move {
        let request = control.next().await.expect("a request");
        let reply = request.reply.expect("with a reply subject");
        other
            .client
            .publish(reply, "closed".into())
            .await
            .expect("answered");
        other.client.flush().await.expect("flushed");
    });
    let answer = within(
        "request to another gateway",
        gw.client.request("ziraai.gateway.gw-b.evict", "c1".into()),
    )
    .await
    .expect("the other gateway may answer on the reply subject");
    assert_eq!(answer.payload.as_ref(), b"closed");
    within("responder", responder).await.expect("responder ok");
    gw.publish_refused("_INBOX.not-a-reply").await;

    // Worker: no live subjects, no gateway buckets.
    let mut wk = Observed::connect(&nats, "worker").await;
    wk.publish_refused("live.victim").await;
    wk.publish_refused("delivery.victim.1.d.acked").await;
    wk.subscribe_refused("live.>").await;
    assert!(
        wk.js().get_key_value("CURSORS").await.is_err(),
        "the worker cannot bind CURSORS"
    );
    wk.refused("Publish to \"$JS.API.STREAM.INFO.KV_CURSORS\"")
        .await;
    wk.publish_refused("$JS.API.DIRECT.GET.KV_CURSORS.$KV.CURSORS.victim.d1")
        .await;
    wk.publish_refused("$KV.CURSORS.victim.d1").await;

    // Platform: jobs only.
    let mut pf = Observed::connect(&nats, "platform").await;
    pf.publish_refused("notify.victim").await;
    pf.publish_refused("live.victim").await;
    pf.publish_refused("$JS.API.STREAM.INFO.JOBS").await;
    pf.subscribe_refused("jobs.>").await;

    // Operator: reads, does not publish events.
    op.publish_refused("notify.victim").await;
    op.publish_refused("live.victim").await;

    // None of the refused live publishes arrived: the first message on live.> is the
    // worker's real event, republished by the stream.
    let u = user("real");
    let worker_js = jetstream::new(wk.client.clone());
    let ack = within("worker publishes", async {
        worker_js
            .publish(format!("notify.{u}"), "{}".into())
            .await
            .expect("sent")
            .await
    })
    .await
    .expect("the worker may publish notify.*");
    let first = within("the real event on live.>", live.next())
        .await
        .expect("subscription open");
    assert_eq!(first.subject.as_str(), format!("live.{u}"));

    // The operator reads every stream.
    let ojs = jetstream::new(op.client.clone());
    for name in [
        "NOTIFY",
        "JOBS",
        "ADVISORIES",
        "DELIVERY",
        "KV_CURSORS",
        "KV_SIGNALR",
    ] {
        within(name, ojs.get_stream(name))
            .await
            .unwrap_or_else(|e| panic!("operator reads {name}: {e}"));
    }
    let stored = within("direct get", async {
        ojs.get_stream_no_info("NOTIFY")
            .await
            .expect("stream")
            .direct_get(ack.sequence)
            .await
    })
    .await
    .expect("operator reads the event");
    assert_eq!(stored.subject.as_str(), format!("notify.{u}"));

    // Without a credential, nothing.
    let anonymous = within("anonymous connect", async_nats::connect(nats.url())).await;
    assert!(anonymous.is_err(), "an unauthenticated client is refused");
}

/// Runs `bin args` with `RUST_LOG=trace` and the credentials in the URL; returns
/// its whole output once it exited.
async fn traced_run(bin: &str, args: &[&str], vars: HashMap<String, String>) -> (bool, String) {
    let mut p = ServiceProcess::spawn(bin, args, &vars);
    let status = p.wait_exit(Duration::from_secs(30)).await;
    (status.success(), format!("{}{}", p.stdout(), p.stderr()))
}

#[tokio::test]
async fn a_password_in_the_nats_url_never_reaches_a_log_line() {
    let nats = provisioned().await;
    let port = nats.url().rsplit(':').next().expect("port").to_owned();
    let pw = nats.password("worker").to_owned();
    let vars = |url: String| {
        HashMap::from([
            ("RUST_LOG".to_owned(), "trace".to_owned()),
            ("ZIRAAI_NATS_URL".to_owned(), url),
        ])
    };
    let u = user("log");
    let publish = ["publish", "--user", u.as_str(), "--analysis", "1"];

    let url = format!("nats://worker:{pw}@127.0.0.1:{port}");
    let (ok, out) = traced_run("ziraai-worker", &publish, vars(url)).await;
    assert!(ok, "publishes with the URL's credentials:\n{out}");
    assert!(out.contains("TRACE"), "trace lines were written:\n{out}");
    assert!(!out.contains(&pw), "the password is in the output:\n{out}");

    // A wrong password fails (and is not printed either), as does a wrong token.
    let wrong = format!("wrong-{}", nuid::next());
    let url = format!("nats://worker:{wrong}@127.0.0.1:{port}");
    let (ok, out) = traced_run("ziraai-worker", &publish, vars(url)).await;
    assert!(!ok, "a wrong password is refused:\n{out}");
    assert!(out.contains("TRACE") || out.contains("DEBUG"), "{out}");
    assert!(
        !out.contains(&wrong),
        "the password is in the output:\n{out}"
    );
    let url = format!("nats://{wrong}@127.0.0.1:{port}");
    let (ok, out) = traced_run("ziraai-worker", &publish, vars(url)).await;
    assert!(!ok, "a wrong token is refused:\n{out}");
    assert!(!out.contains(&wrong), "the token is in the output:\n{out}");

    // The gateway, a long-running service, through start-up, a socket and a drain.
    let gw_pw = nats.password("gateway").to_owned();
    let url = format!("nats://gateway:{gw_pw}@127.0.0.1:{port}");
    let trace = [
        ("ZIRAAI_NATS_URL", url.as_str()),
        ("RUST_LOG", "trace"),
        ("ZIRAAI_LOG_FORMAT", "json"),
    ];
    let mut gateway = ServiceProcess::gateway(&nats, &trace).await;
    // The development demo page shows the broker URL (in its submit command) too.
    let (status, page) = http_get(gateway.addr(), "/demo").await;
    assert_eq!(status, 200);
    assert!(page.contains("ziraai-worker submit"), "the demo page is on");
    assert!(!page.contains("{{"), "every placeholder filled");
    assert!(!page.contains(&gw_pw), "the password is on the demo page");
    let mut socket = WsClient::open(&gateway.ws_url(), &u).await;
    // A token refreshed in-band travels in a frame: the WebSocket library's trace
    // lines print frames, and must not print this one.
    let fresh = ziraai_gateway::auth::mint(
        &ziraai_common::GatewayServiceConfig::development()
            .auth
            .jwt_secret,
        u.as_str(),
        900,
    );
    socket
        .send_text(&serde_json::json!({"type": "auth", "token": fresh}).to_string())
        .await;
    assert!(
        matches!(
            socket.frame().await,
            ziraai_proto::ServerFrame::Authenticated { .. }
        ),
        "refreshed"
    );
    socket.close().await;
    gateway.sigterm();
    let status = gateway.wait_exit(Duration::from_secs(30)).await;
    let out = format!("{}{}", gateway.stdout(), gateway.stderr());
    assert!(status.success(), "{out}");
    assert!(out.contains("\"TRACE\""), "trace lines were written");
    assert!(
        !out.contains(&gw_pw),
        "the password is in the output:\n{out}"
    );
    let signature = fresh.rsplit('.').next().unwrap_or_default();
    assert!(
        !out.contains(signature),
        "a refreshed token is in the output:\n{out}"
    );
}
