//! A bad production configuration stops the shipped binaries before they touch
//! anything: exit status 2 and one line per problem on stderr, each naming its variable.
//!
//! Each case is the shipped `infra/config/production.toml` plus a valid baseline of
//! variables plus one (or two) bad ones. Variables only the gateway reads (token secret,
//! origins, demo page, its durations) are asserted on the gateway only, the worker's own
//! on the worker only: each service validates the shared section and its own.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitStatus;

use ziraai_common::config::DEV_JWT_SECRET;
use ziraai_e2e::*;

const STRONG_SECRET: &str = "production-secret-0123456789-abcdefghijklmnopqrstuvwxyz";

/// Which binaries must refuse a case.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Gateway,
    Worker,
    Both,
}

struct Case {
    what: &'static str,
    /// Variables set (`Some`) or removed (`None`) on top of the baseline.
    changes: &'static [(&'static str, Option<&'static str>)],
    /// Use the shipped file, which names no credential (the broker case).
    without_file_creds: bool,
    who: Who,
    /// One problem line per name, naming it.
    names: &'static [&'static str],
}

const fn case(
    what: &'static str,
    changes: &'static [(&'static str, Option<&'static str>)],
    who: Who,
    names: &'static [&'static str],
) -> Case {
    Case {
        what,
        changes,
        without_file_creds: false,
        who,
        names,
    }
}

const SECRET: &str = "ZIRAAI_JWT_SECRET";
const ORIGINS: &str = "ZIRAAI_GATEWAY_ALLOWED_ORIGINS";

fn cases() -> Vec<Case> {
    vec![
        case("no JWT secret", &[(SECRET, None)], Who::Gateway, &[SECRET]),
        case(
            "short JWT secret",
            &[(SECRET, Some("0123456789abcdef"))],
            Who::Gateway,
            &[SECRET],
        ),
        case(
            "development JWT secret",
            &[(SECRET, Some(DEV_JWT_SECRET))],
            Who::Gateway,
            &[SECRET],
        ),
        case(
            "wildcard origin",
            &[(ORIGINS, Some("*"))],
            Who::Gateway,
            &[ORIGINS],
        ),
        case(
            "demo page on",
            &[("ZIRAAI_GATEWAY_DEMO_PAGE", Some("true"))],
            Who::Gateway,
            &["ZIRAAI_GATEWAY_DEMO_PAGE"],
        ),
        case(
            "bad gateway duration",
            &[("ZIRAAI_GATEWAY_SHUTDOWN_GRACE", Some("soon"))],
            Who::Gateway,
            &["ZIRAAI_GATEWAY_SHUTDOWN_GRACE"],
        ),
        case(
            "unknown environment",
            &[("ZIRAAI_ENV", Some("prodution"))],
            Who::Both,
            &["ZIRAAI_ENV"],
        ),
        Case {
            what: "broker without credentials",
            changes: &[
                ("ZIRAAI_NATS_URL", Some("nats://127.0.0.1:9")),
                ("ZIRAAI_NATS_CREDS_FILE", None),
            ],
            without_file_creds: true,
            who: Who::Both,
            names: &["ZIRAAI_NATS_CREDS_FILE"],
        },
        case(
            "zero NATS connect timeout",
            &[("ZIRAAI_NATS_CONNECT_TIMEOUT", Some("0s"))],
            Who::Both,
            &["ZIRAAI_NATS_CONNECT_TIMEOUT"],
        ),
        case(
            "unknown log format",
            &[("ZIRAAI_LOG_FORMAT", Some("xml"))],
            Who::Both,
            &["ZIRAAI_LOG_FORMAT"],
        ),
        case(
            "bad worker duration",
            &[("ZIRAAI_WORKER_ACK_WAIT", Some("1 fortnight"))],
            Who::Worker,
            &["ZIRAAI_WORKER_ACK_WAIT"],
        ),
        case(
            "analyzer URL not http",
            &[("ZIRAAI_ANALYZER_URL", Some("ftp://analyzer/analyze"))],
            Who::Worker,
            &["ZIRAAI_ANALYZER_URL"],
        ),
        case(
            "two gateway problems",
            &[
                (ORIGINS, Some("https://ziraai.com,*")),
                (SECRET, Some("short")),
            ],
            Who::Gateway,
            &[ORIGINS, SECRET],
        ),
        case(
            "two shared problems",
            &[
                ("ZIRAAI_LOG_FORMAT", Some("xml")),
                ("ZIRAAI_NATS_CONNECT_TIMEOUT", Some("never")),
            ],
            Who::Both,
            &["ZIRAAI_LOG_FORMAT", "ZIRAAI_NATS_CONNECT_TIMEOUT"],
        ),
    ]
}

/// Production as shipped plus what it needs from variables. The credentials file
/// exists but holds no credentials, so a valid configuration gets past validation and
/// then fails (status 1) reading it, without reaching any network.
fn baseline(tmp: &Path) -> HashMap<String, String> {
    let creds = tmp.join("gateway.creds");
    std::fs::write(&creds, "not a credentials file\n").expect("write creds");
    [
        ("ZIRAAI_ENV", "production".to_owned()),
        (
            "ZIRAAI_CONFIG_DIR",
            shipped_config_dir().display().to_string(),
        ),
        (SECRET, STRONG_SECRET.to_owned()),
        (
            "ZIRAAI_NATS_URL",
            "nats://ziraai:secret@127.0.0.1:9".to_owned(),
        ),
        ("ZIRAAI_NATS_CREDS_FILE", creds.display().to_string()),
        ("ZIRAAI_NATS_CONNECT_TIMEOUT", "1s".to_owned()),
        ("ZIRAAI_GATEWAY_LISTEN", "127.0.0.1:0".to_owned()),
        ("ZIRAAI_WORKER_LISTEN", "127.0.0.1:0".to_owned()),
        (
            "ZIRAAI_ANALYZER_URL",
            "http://analyzer.prod.svc:8080/analyze".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The shipped production file, which names no broker credential (each Deployment
/// sets its own user of `nats/auth.conf`): the broker case uses it as it is.
fn shipped_without_creds(_tmp: &Path) -> String {
    let shipped = std::fs::read_to_string(shipped_config_dir().join("production.toml"))
        .expect("shipped production.toml");
    assert!(
        !shipped
            .lines()
            .map(str::trim_start)
            .any(|l| l.starts_with("creds_file") || l.starts_with("user")),
        "the shipped file names no credential"
    );
    shipped_config_dir().display().to_string()
}

/// What is wrong with one refusal, if anything.
fn check_refusal(
    case: &Case,
    bin: &str,
    status: ExitStatus,
    stdout: &str,
    stderr: &str,
) -> Option<String> {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let problems: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("ZIRAAI_"))
        .collect();
    let mut wrong = Vec::new();
    if status.code() != Some(2) {
        wrong.push(format!("exit {status}, want 2"));
    }
    if problems.len() != case.names.len() {
        wrong.push(format!(
            "{} problem lines, want {}",
            problems.len(),
            case.names.len()
        ));
    }
    for name in case.names {
        let naming = problems.iter().filter(|l| l.contains(name)).count();
        if naming != 1 {
            wrong.push(format!("{naming} lines name {name}, want 1"));
        }
    }
    if lines.len() > problems.len() + 1 {
        wrong.push("more than one line besides the problems".into());
    }
    if !stdout.is_empty() {
        wrong.push("something on stdout".into());
    }
    (!wrong.is_empty()).then(|| {
        format!(
            "{bin}, {}: {}\n  stderr:\n{stderr}  stdout: {stdout:?}",
            case.what,
            wrong.join("; ")
        )
    })
}

#[tokio::test]
async fn every_bad_production_setting_stops_the_binaries_with_status_2_and_one_line_per_problem() {
    let tmp = tempfile::tempdir().expect("tmp");
    let base = baseline(tmp.path());
    let no_file_creds = shipped_without_creds(tmp.path());
    let mut failures = Vec::new();
    let mut runs = 0;
    for case in cases() {
        let mut vars = base.clone();
        for (k, v) in case.changes {
            match v {
                Some(v) => vars.insert((*k).to_owned(), (*v).to_owned()),
                None => vars.remove(*k),
            };
        }
        if case.without_file_creds {
            vars.insert("ZIRAAI_CONFIG_DIR".into(), no_file_creds.clone());
        }
        let bins: &[(&str, &[&str])] = match case.who {
            Who::Gateway => &[("ziraai-gateway", &[])],
            Who::Worker => &[("ziraai-worker", &["run"])],
            Who::Both => &[("ziraai-gateway", &[]), ("ziraai-worker", &["run"])],
        };
        for (bin, args) in bins {
            let (status, stdout, stderr) = ServiceProcess::run_to_exit(bin, args, &vars).await;
            runs += 1;
            failures.extend(check_refusal(&case, bin, status, &stdout, &stderr));
        }
    }
    println!("bad configuration: {runs} refusals checked");
    assert!(
        failures.is_empty(),
        "{} of {runs} refusals wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn the_production_baseline_of_those_cases_passes_validation() {
    // Without this, every case above could fail for a reason the baseline brings.
    let tmp = tempfile::tempdir().expect("tmp");
    let base = baseline(tmp.path());
    for (bin, args) in [("ziraai-gateway", &[][..]), ("ziraai-worker", &["run"][..])] {
        let (status, _, stderr) = ServiceProcess::run_to_exit(bin, args, &base).await;
        assert_eq!(
            status.code(),
            Some(1),
            "{bin} gets past validation and fails on the creds file:\n{stderr}"
        );
        assert!(
            !stderr.contains("invalid configuration"),
            "{bin}:\n{stderr}"
        );
        assert!(
            stderr.contains("gateway.creds"),
            "{bin} failed on the credentials file:\n{stderr}"
        );
    }
}
