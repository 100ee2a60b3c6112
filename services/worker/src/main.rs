//! `ziraai-worker`: publish one analysis outcome, or run the demo producer.

use anyhow::Context as _;
use async_nats::jetstream;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use ziraai_common::{WorkerServiceConfig as Config, nats, shutdown, telemetry};
use ziraai_proto::PayloadEncoding;
use ziraai_proto::UserId;
use ziraai_proto::analysis::{AnalysisError, AnalysisId, AnalysisOutcome};
use ziraai_worker::{CheckedEvent, Publisher};

#[derive(Parser)]
#[command(name = "ziraai-worker", version, about = "ZiraAI Realtime worker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish one analysis outcome, wait for the PubAck, print the stream sequence
    /// (or `duplicate: stored earlier as N` when the analysis was published before).
    Publish {
        /// User to notify (`notify.<user>`); `[A-Za-z0-9_-]{1,64}`.
        #[arg(long)]
        user: String,
        /// Analysis id; the event id is `analysis-<id>`, so publishing it again is a
        /// duplicate the stream drops.
        #[arg(long)]
        analysis: String,
        /// Publish analysis.failed instead of analysis.completed.
        #[arg(long)]
        failed: bool,
        /// Error message of a failed analysis.
        #[arg(long, requires = "failed")]
        error: Option<String>,
        /// Error code of a failed analysis.
        #[arg(long, default_value = "analysis_failed", requires = "failed")]
        code: String,
        /// Result of a completed analysis, as JSON.
        #[arg(long, conflicts_with = "failed")]
        result: Option<String>,
    },
    /// Consume analysis jobs from JOBS, call the analyzer, publish the outcomes.
    Run,
    /// Submit a sample analysis job for the demo user every few seconds until stopped.
    Demo,
    /// Submit one analysis job (what the platform does), wait until JOBS stored it,
    /// print `submitted job <id> as <JOBS sequence>`.
    Submit {
        /// User whose photo it is; the outcome is published to `notify.<user>`.
        #[arg(long)]
        user: String,
        /// Analysis id passed to the analyzer and carried in the event.
        #[arg(long)]
        analysis: String,
        /// URL of the plant photo passed to the analyzer.
        #[arg(long, default_value = "https://example.invalid/photo.jpg")]
        image: String,
        /// Job id (default: a new unique id).
        #[arg(long)]
        job: Option<String>,
    },
    /// Serve a stand-in analyzer with sample results (development only).
    DevAnalyzer,
    /// Create or update every stream and consumer defined under `nats/` with the
    /// configured replicas (run with the operator credential: services may only read
    /// their definitions). A stream with more replicas keeps them unless
    /// --lower-replicas is given.
    Provision {
        /// Lower streams that have more replicas than ZIRAAI_NATS_REPLICAS (printing
        /// each one lowered).
        #[arg(long)]
        lower_replicas: bool,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match Config::for_main("ziraai-worker") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let traces = match cli.command {
        Command::Run | Command::Demo | Command::DevAnalyzer => {
            let service = telemetry::ServiceInfo {
                default_name: "ziraai-worker",
                version: env!("CARGO_PKG_VERSION"),
                instance_id: format!("wk-{}", nuid::next()),
                environment: config.env.as_str(),
            };
            let vars = std::env::vars().collect();
            let (traces, warnings) = telemetry::init_service(config.log_format, service, &vars);
            warnings.iter().for_each(|w| tracing::warn!("{w}"));
            Some(traces)
        }
        // One-shot tools: stdout is the result, logs only when something is wrong.
        Command::Publish { .. } | Command::Submit { .. } | Command::Provision { .. } => {
            telemetry::init_cli(config.log_format);
            None
        }
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let result = run(cli.command, config).await;
    if let Some(traces) = traces {
        traces.shutdown(telemetry::SHUTDOWN_GRACE);
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Too few JetStream servers for the replicas: the deployment does not fit the
        // configuration, one line and exit 2 like a configuration error.
        Err(e)
            if e.downcast_ref::<nats::NatsSetupError>()
                .is_some_and(nats::NatsSetupError::is_refusal) =>
        {
            eprintln!("ziraai-worker: {e}");
            std::process::ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("ziraai-worker: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match &command {
        Command::Run => {
            let app = ziraai_worker::WorkerApp::build(config).await?;
            tracing::info!(version = env!("CARGO_PKG_VERSION"), health = %app.local_addr()?, "worker consuming jobs");
            return app.run_until_stopped(shutdown::signal()).await;
        }
        Command::DevAnalyzer => {
            if config.env != ziraai_common::Environment::Development {
                anyhow::bail!("the development analyzer runs only with ZIRAAI_ENV=development");
            }
            return ziraai_worker::dev_analyzer::serve(
                config.worker.dev_analyzer_listen,
                shutdown::signal(),
            )
            .await;
        }
        _ => {}
    }
    let outcome = match &command {
        Command::Publish {
            user,
            analysis,
            failed,
            error,
            code,
            result,
        } => {
            let user = UserId::parse(user).map_err(|e| anyhow::anyhow!("--user {user:?} {e}"))?;
            let id = AnalysisId::from_arg(analysis);
            Some(if *failed {
                let message = error.clone().unwrap_or_else(|| "analysis failed".into());
                AnalysisOutcome::failed(
                    id,
                    user,
                    AnalysisError {
                        code: code.clone(),
                        message,
                    },
                )
            } else {
                let result = match result {
                    Some(raw) => match serde_json::from_str(raw) {
                        Ok(object @ serde_json::Value::Object(_)) => object,
                        Ok(_) => anyhow::bail!(
                            "--result must be a JSON object like '{{\"disease\":\"none\"}}', not {raw}"
                        ),
                        Err(e) => anyhow::bail!("--result is not JSON ({e}): {raw}"),
                    },
                    None => serde_json::json!({}),
                };
                AnalysisOutcome::completed(id, user, result)
            })
        }
        _ => None,
    };
    // Refuse what a gateway could not deliver before connecting (the CLI sends JSON).
    let checked = match &outcome {
        Some(o) => Some(CheckedEvent::new(
            &o.to_envelope(),
            &o.event_id(),
            PayloadEncoding::Json,
        )?),
        None => None,
    };
    let client = nats::connect(&config.nats, "ziraai-worker").await?;
    let js = jetstream::new(client.clone());
    let replicas = config.nats.replicas;
    if let Command::Provision { lower_replicas } = &command {
        let applied =
            nats::provision(&js, config.worker.ack_wait, replicas, *lower_replicas).await?;
        for (stream, applied) in &applied {
            if let nats::Applied::Lowered { from } = applied {
                println!("lowered {stream} from {from} to {replicas} replica(s)");
            }
        }
        println!("streams and consumers applied");
        client.flush().await.context("flushing NATS")?;
        return Ok(());
    }
    // Job submitters (the platform credential) may publish jobs and nothing else: they
    // neither read nor apply definitions; the worker or `provision` applies JOBS.
    if !matches!(command, Command::Submit { .. } | Command::Demo) {
        nats::apply_producer_streams(&js, replicas).await?;
    }
    if let Command::Submit {
        user,
        analysis,
        image,
        job,
    } = &command
    {
        let user = UserId::parse(user).map_err(|e| anyhow::anyhow!("--user {user:?} {e}"))?;
        let job = serde_json::json!({
            "jobId": job.clone().unwrap_or_else(|| nuid::next().to_string()),
            "analysisId": AnalysisId::from_arg(analysis),
            "userId": user,
            "imageUrl": image,
        });
        let seq = ziraai_worker::demo::submit_job(&js, &job).await?;
        let id = job["jobId"].as_str().unwrap_or_default();
        println!("submitted job {id} as {seq}");
        client.flush().await.context("flushing NATS")?;
        return Ok(());
    }
    let publisher = Publisher::new(js.clone());
    match outcome.zip(checked) {
        Some((outcome, checked)) => {
            let published = publisher
                .publish_checked(outcome.user_id(), &checked)
                .await?;
            // Details for RUST_LOG=info; by default the one line below is all.
            tracing::info!(
                kind = outcome.kind(),
                subject = %outcome.user_id().notify_subject(),
                id = %outcome.event_id(),
                seq = published.seq,
                duplicate = published.duplicate,
                "published"
            );
            if published.duplicate {
                println!("duplicate: stored earlier as {}", published.seq);
            } else {
                println!("{}", published.seq);
            }
        }
        None => {
            let user = UserId::parse(&config.worker.demo_user)
                .map_err(|e| anyhow::anyhow!("demo user {e}"))?;
            tracing::info!(user = %user, interval = ?config.worker.demo_interval, "demo job submitter started");
            let stop = CancellationToken::new();
            let signal = stop.clone();
            tokio::spawn(async move {
                shutdown::signal().await;
                signal.cancel();
            });
            drop(publisher);
            ziraai_worker::demo::run(js, user, config.worker.demo_interval, stop).await;
        }
    }
    client.flush().await.context("flushing NATS")?;
    Ok(())
}
