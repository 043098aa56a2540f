//! The command line: `run` (the default), `check-config`, `dev`, `init`, `token`, `api-key`, `scan`,
//! `mcp-pins`, `check-rules`, `healthcheck` and `audit-verify`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::checklist::{self, Status};
use crate::config::{Config, ConfigError, LogFormat};
use crate::server::{self, Gateway};

/// Config file used when neither `--config` nor `PORTCULLIS_CONFIG` names one.
pub const DEFAULT_CONFIG: &str = "config/portcullis.toml";

/// Exit status when the configuration is invalid at start-up (EX_USAGE).
pub const EXIT_BAD_CONFIG: u8 = 64;

/// portcullis: a security gateway for AI-agent backends.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    /// The config file of `run` when no subcommand is given (default: config/portcullis.toml).
    #[arg(long, env = "PORTCULLIS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The `--config` option of the subcommands that read a config file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArg {
    /// The config file (default: config/portcullis.toml).
    #[arg(long, env = "PORTCULLIS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Run {
        /// The config file.
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Validate the config and print the security checklist; exit 1 when invalid.
    CheckConfig {
        /// Treat every WARN as a failure.
        #[arg(long)]
        strict: bool,
        /// The config file.
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Start a local trial setup: self-signed TLS, a demo agent, no files needed.
    Dev,
    /// Write a production-shaped config and a trial certificate into DIR, and say which lines to
    /// change; `check-config --strict` passes once the identity provider is filled in.
    Init {
        /// The directory to write into (created when missing); nothing is overwritten.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// A DNS name or IP address for the trial certificate (repeat for several; default
        /// localhost and 127.0.0.1).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
    },
    /// Mint a signed JWT from a private key file, for local testing only.
    Token {
        /// PEM private key (RSA, EC, Ed25519) or, for HS*, a file holding the shared secret.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Signature algorithm.
        #[arg(long, default_value = "ES256")]
        alg: String,
        /// `kid` header.
        #[arg(long)]
        kid: Option<String>,
        /// `sub` claim.
        #[arg(long, default_value = "test-user")]
        sub: String,
        /// `scope` claim: space-separated scopes.
        #[arg(long, default_value = "")]
        scope: String,
        /// Lifetime, e.g. 15m, 1h.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// `iss` claim.
        #[arg(long)]
        iss: Option<String>,
        /// `aud` claim.
        #[arg(long)]
        aud: Option<String>,
    },
    /// Probe the admin listener named in the config: exit 0 when ready (or, with --live, up).
    ///
    /// For container health checks and Kubernetes exec probes: the admin port can stay on
    /// loopback and the image needs no shell or curl.
    Healthcheck {
        /// Ask /healthz (the process is up) instead of /readyz (ready for traffic).
        #[arg(long)]
        live: bool,
        /// The config file naming the admin listener.
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Manage API keys (`[auth.api_keys]`).
    ApiKey {
        /// What to do with API keys.
        #[command(subcommand)]
        action: ApiKeyAction,
    },
    /// Run the secret detectors of [dlp] over files and directories (skipping .git and binary
    /// files): print `file:line: rule` for each finding (never the value); exit 1 when something
    /// is found, 2 when a path cannot be read. For pre-commit hooks and CI.
    Scan {
        /// Files and directories to scan.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Review and approve MCP tool definitions pinned in `[mcp] pins_file`.
    McpPins {
        /// The pins file (default: `[mcp] pins_file` of the config).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// The config file naming the pins file, when `--file` is not given.
        #[command(flatten)]
        config: ConfigArg,
        /// What to do.
        #[command(subcommand)]
        action: McpPinsAction,
    },
    /// Measure the injection rules on a labelled JSONL file: detection and false-positive rates
    /// per category and role, as requests would be judged. Each line is
    /// `{"label": "malicious"|"benign", "category": "...", "role": "user"|"tool"|..., "text": "..."}`;
    /// an item without `role` is judged as a user message and as a tool result. Uses the rules
    /// and `[llm] scan_roles` of `--config` when one is given, the built-in rules otherwise.
    /// Exit 0 after the report, 2 when the file cannot be read or a line is not an item.
    CheckRules {
        /// The labelled JSONL file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// List the items judged wrongly: false positives, misses, or both.
        #[arg(long, value_enum, value_name = "WHAT")]
        show: Option<ShowMistakes>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// The config file whose rules and `[llm] scan_roles` are measured.
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Check the hash chain of audit log files (oldest first): exit 0 when intact, 1 at the first
    /// broken line (named by number, never by content), 2 when a file cannot be read.
    AuditVerify {
        /// Audit log files in rotation order, oldest first.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

/// What `api-key` does.
#[derive(Debug, Subcommand)]
pub enum ApiKeyAction {
    /// Print a new random key on stdout and the line to add to the keys file on stderr. The key
    /// itself is stored nowhere: the file holds only its SHA-256 digest.
    New {
        /// The user the key stands for.
        #[arg(long)]
        user: String,
        /// A scope the key grants (repeat for several).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
    },
}

/// Which mistakes `check-rules --show` lists.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ShowMistakes {
    /// Benign items a rule flagged.
    Fp,
    /// Malicious items no rule flagged.
    Misses,
    /// Both.
    All,
}

/// What `mcp-pins` does.
#[derive(Debug, Subcommand)]
pub enum McpPinsAction {
    /// List the pinned tools: `pinned` or `changed` (a new definition waits for approval).
    List,
    /// Show a tool's pinned definition and, when it changed, the new one.
    Show {
        /// The tool's name.
        name: String,
    },
    /// Approve the new definition of changed tools: they are listed and callable again.
    Approve {
        /// The tools' names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

impl Cli {
    /// The config file given to the subcommand, else before it, else `PORTCULLIS_CONFIG` (which
    /// both read), else [`DEFAULT_CONFIG`].
    fn config_path<'a>(&'a self, sub: &'a ConfigArg) -> &'a Path {
        self.given_config(sub)
            .unwrap_or_else(|| Path::new(DEFAULT_CONFIG))
    }

    fn given_config<'a>(&'a self, sub: &'a ConfigArg) -> Option<&'a Path> {
        sub.config.as_deref().or(self.config.as_deref())
    }
}

/// Runs `portcullis mcp-pins` on the pins file `path`; returns what to print.
fn mcp_pins(path: &Path, action: &McpPinsAction) -> Result<String, String> {
    use crate::mcp::pins::PinFile;
    use serde_json::Value;
    use std::fmt::Write as _;
    let mut file = PinFile::read(path)?;
    let mut out = String::new();
    match action {
        McpPinsAction::List => {
            for (name, pin) in &file.tools {
                let state = if pin.pending.is_some() {
                    "changed"
                } else {
                    "pinned"
                };
                let _ = writeln!(out, "{state}\t{name}");
            }
        }
        McpPinsAction::Show { name } => {
            let pin = file
                .tools
                .get(name)
                .ok_or_else(|| format!("no tool {name:?} is pinned"))?;
            let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
            let _ = writeln!(out, "pinned ({}):\n{}", pin.sha256, pretty(&pin.definition));
            if let Some(pending) = &pin.pending {
                let _ = writeln!(
                    out,
                    "changed to ({}), waiting for approval:\n{}",
                    pending.sha256,
                    pretty(&pending.definition)
                );
            }
        }
        McpPinsAction::Approve { names } => {
            for name in names {
                if !file.approve(name) {
                    return Err(format!("{name:?} has no changed definition to approve"));
                }
                let _ = writeln!(out, "approved\t{name}");
            }
            file.write(path)?;
        }
    }
    Ok(out)
}

/// `[mcp] pins_file` of the config at `path`, read without validating the rest (the operator
/// approving a tool need not hold the gateway's secrets).
fn pins_file_of(path: &Path) -> Result<PathBuf, String> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {} ({})", path.display(), e.kind()))?;
    let raw = crate::config::parse_raw(&source, &path.display().to_string())
        .map_err(|e| e.to_string())?;
    raw.mcp
        .and_then(|m| m.pins_file)
        .map(PathBuf::from)
        .ok_or_else(|| format!("{} sets no [mcp] pins_file; give --file", path.display()))
}

/// Library log targets a client can make warn at will, capped at `error` unless `PORTCULLIS_LOG`
/// names them: rustls warns on every handshake whose SNI is an IP address (as wrk and some SDKs
/// send), which would let any client write a log line per connection.
const CLIENT_TRIGGERED_TARGETS: &str = "rustls=error";

/// The log filter for a `PORTCULLIS_LOG` value (`info` when unset), with
/// [`CLIENT_TRIGGERED_TARGETS`] capped unless the value names them.
fn log_filter_spec(configured: Option<&str>) -> String {
    let spec = configured.unwrap_or("info");
    if spec.contains("rustls") {
        spec.to_owned()
    } else {
        format!("{spec},{CLIENT_TRIGGERED_TARGETS}")
    }
}

/// Sends operational logs to stderr in `format` (`PORTCULLIS_LOG_FORMAT=json` or `text`
/// overrides it); `PORTCULLIS_LOG` filters (default `info`). Colours only when stderr is a
/// terminal: a file, a pipe or a journal gets plain text.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let format = match std::env::var("PORTCULLIS_LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        Ok("text") => LogFormat::Text,
        _ => format,
    };
    let configured = std::env::var("PORTCULLIS_LOG").ok();
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter_spec(configured.as_deref()))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_filter_spec(None)));
    // A closed stderr (a log collector restarting) must never bring the gateway down, so
    // write errors are not reported by printing, which would panic.
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Runs the chosen command and returns the process exit status.
pub fn execute(cli: Cli) -> ExitCode {
    // `run` starts logging once its config has named the format; every other command now.
    if !matches!(cli.command, None | Some(Command::Run { .. })) {
        init_logging(LogFormat::default());
    }
    let no_config = ConfigArg::default();
    match &cli.command {
        Some(Command::CheckConfig { strict, config }) => {
            check_config(cli.config_path(config), *strict)
        }
        Some(Command::ApiKey {
            action: ApiKeyAction::New { user, scopes },
        }) => match crate::api_keys::new_key(user, scopes) {
            Ok((key, line)) => {
                println!("{key}");
                eprintln!("add this line to the [auth.api_keys] file:\n{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::McpPins {
            file,
            action,
            config,
        }) => {
            let file = match file {
                Some(file) => file.clone(),
                None => match pins_file_of(cli.config_path(config)) {
                    Ok(file) => file,
                    Err(e) => {
                        eprintln!("portcullis mcp-pins: {e}");
                        return ExitCode::from(2);
                    }
                },
            };
            match mcp_pins(&file, action) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("portcullis mcp-pins: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Scan { paths }) => match crate::dlp::scan_paths(paths) {
            Ok(findings) if findings.is_empty() => ExitCode::SUCCESS,
            Ok(findings) => {
                for f in &findings {
                    println!("{}:{}: {}", f.path.display(), f.line, f.rule);
                }
                eprintln!("portcullis scan: {} secret(s) found", findings.len());
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("portcullis scan: {e}");
                ExitCode::from(2)
            }
        },
        Some(Command::Init { dir, names }) => match crate::init::init(dir, names) {
            Ok(written) => {
                print!("{}", crate::init::next_steps(&written));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis init: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Dev) => with_runtime(|| async {
            match crate::dev::run().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
        Some(Command::Token {
            key,
            alg,
            kid,
            sub,
            scope,
            ttl,
            iss,
            aud,
        }) => {
            let minted = alg
                .parse::<jsonwebtoken::Algorithm>()
                .map_err(|_| format!("unknown algorithm {alg}"))
                .and_then(|algorithm| {
                    let signing = crate::auth::mint::signing_key_from_file(key, algorithm)?;
                    crate::auth::mint::mint(
                        &signing,
                        &crate::auth::mint::TokenRequest {
                            algorithm,
                            kid: kid.clone(),
                            subject: sub.clone(),
                            scopes: scope.split_whitespace().map(str::to_owned).collect(),
                            ttl: *ttl,
                            issuer: iss.clone(),
                            audience: aud.clone(),
                        },
                    )
                });
            match minted {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Healthcheck { live, config }) => {
            let path = if *live { "/healthz" } else { "/readyz" };
            let config_path = cli.config_path(config).to_owned();
            with_runtime(|| healthcheck(config_path, path))
        }
        Some(Command::AuditVerify { files }) => audit_verify(files),
        Some(Command::CheckRules {
            file,
            show,
            json,
            config,
        }) => check_rules(cli.given_config(config), file, *show, *json),
        Some(Command::Run { config }) => run_gateway(cli.config_path(config)),
        None => run_gateway(cli.config_path(&no_config)),
    }
}

/// `portcullis run`: loads the config, starts logging in its format, serves until a signal.
fn run_gateway(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            init_logging(LogFormat::default());
            eprintln!("portcullis: invalid configuration: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    init_logging(config.server.log_format);
    let path = path.to_owned();
    with_runtime(|| run(config, path))
}

fn with_runtime<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    match runtime_builder().enable_all().build() {
        Ok(runtime) => runtime.block_on(f()),
        Err(e) => {
            eprintln!("portcullis: cannot start the async runtime ({e})");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime's scheduler. With one CPU to run on (a pinned process, a container limited to
/// one core), a single-threaded one: the same one thread of work as a one-worker pool, without the
/// pool's cross-thread hand-offs (about 4% more requests per second in the load benchmark). With
/// more CPUs, a worker thread per CPU.
fn runtime_builder() -> tokio::runtime::Builder {
    if std::thread::available_parallelism().is_ok_and(|cpus| cpus.get() == 1) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
}

async fn run(config: Config, path: PathBuf) -> ExitCode {
    let gateway = match Gateway::bind(config).await {
        Ok(gateway) => gateway,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::FAILURE;
        }
    };
    let admin = gateway
        .admin_addr()
        .map_or_else(|| "off".to_owned(), |addr| addr.to_string());
    let metrics = gateway
        .metrics_addr()
        .map_or_else(|| "off".to_owned(), |addr| addr.to_string());
    tracing::info!(listen = %gateway.local_addr(), %admin, %metrics, "portcullis is serving");
    let signals = tokio::spawn(server::reload::on_signals(gateway.reloader(), path));
    gateway.serve(server::shutdown_signal()).await;
    signals.abort();
    ExitCode::SUCCESS
}

fn check_config(path: &Path, strict: bool) -> ExitCode {
    println!("portcullis check-config: {}", path.display());
    let source = match std::fs::read_to_string(path) {
        Ok(source) => source,
        Err(e) => {
            return invalid(&ConfigError {
                file: path.display().to_string(),
                line: None,
                key: None,
                message: format!("cannot read the config file ({})", e.kind()),
            });
        }
    };
    let config = match Config::from_toml(&source, &path.display().to_string()) {
        Ok(config) => config,
        Err(e) => return invalid(&e),
    };
    println!("PASS configuration valid: every key known, every value usable");
    let items = checklist::evaluate(&config, &source);
    for item in &items {
        println!("{item}");
    }
    let fails = items.iter().filter(|i| i.status == Status::Fail).count();
    let warns = items.iter().filter(|i| i.status == Status::Warn).count();
    if fails > 0 || (strict && warns > 0) {
        let strict_note = if strict && warns > 0 {
            " (--strict: warnings fail)"
        } else {
            ""
        };
        println!("result: FAIL, {fails} failed, {warns} warnings{strict_note}");
        ExitCode::FAILURE
    } else {
        println!("result: OK, {warns} warnings");
        ExitCode::SUCCESS
    }
}

fn check_rules(
    config: Option<&Path>,
    file: &Path,
    show: Option<ShowMistakes>,
    json: bool,
) -> ExitCode {
    use crate::config::llm::{DEFAULT_SCAN_ROLES, Roles};
    use crate::detect::rules::{RuleOptions, RuleSet};
    use crate::validate::evaluate::{Show, evaluate};
    let (rules, roles, origin) = match config {
        Some(path) => {
            let detection = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {} ({})", path.display(), e.kind()))
                .and_then(|source| {
                    crate::config::detection_of(&source, &path.display().to_string())
                        .map_err(|e| format!("invalid configuration: {e}"))
                });
            match detection {
                Ok((settings, roles)) => (settings.rules, roles, path.display().to_string()),
                Err(e) => {
                    eprintln!("portcullis check-rules: {e}");
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            }
        }
        None => match RuleSet::new(&RuleOptions::default()) {
            Ok(rules) => (
                std::sync::Arc::new(rules),
                Roles::of(&DEFAULT_SCAN_ROLES),
                "built-in rules".to_owned(),
            ),
            Err(e) => {
                eprintln!("portcullis check-rules: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let corpus = match std::fs::read_to_string(file) {
        Ok(corpus) => corpus,
        Err(e) => {
            eprintln!(
                "portcullis check-rules: cannot read {} ({})",
                file.display(),
                e.kind()
            );
            return ExitCode::from(2);
        }
    };
    let report = match evaluate(&corpus, &rules, roles) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("portcullis check-rules: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        let show = match show {
            None => Show::Nothing,
            Some(ShowMistakes::Fp) => Show::FalsePositives,
            Some(ShowMistakes::Misses) => Show::Misses,
            Some(ShowMistakes::All) => Show::All,
        };
        println!("portcullis check-rules: {} with {origin}", file.display());
        print!("{}", report.render(show));
    }
    ExitCode::SUCCESS
}

fn audit_verify(files: &[PathBuf]) -> ExitCode {
    match crate::audit::chain::verify(files) {
        Ok(summary) => {
            let seqs = match (summary.first_seq, summary.last_seq) {
                (Some(first), Some(last)) => format!(", seq {first} to {last}"),
                _ => String::new(),
            };
            println!(
                "intact: {} records{seqs} in {} file(s)",
                summary.records,
                files.len()
            );
            if let Some(first) = summary.first_seq.filter(|&s| s > 1) {
                println!(
                    "note: the chain starts at seq {first}; earlier records are in files not given"
                );
            }
            if let Some(hash) = summary.last_hash {
                println!("last line sha256: {hash}");
            }
            ExitCode::SUCCESS
        }
        Err(e @ crate::audit::chain::VerifyError::Broken { .. }) => {
            println!("broken: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::from(2)
        }
    }
}

fn invalid(error: &ConfigError) -> ExitCode {
    println!("FAIL configuration valid: {error}");
    println!("result: FAIL, configuration invalid");
    ExitCode::FAILURE
}

async fn healthcheck(config_path: PathBuf, path: &'static str) -> ExitCode {
    let source = match std::fs::read_to_string(&config_path) {
        Ok(source) => source,
        Err(e) => {
            eprintln!(
                "portcullis: cannot read {} ({})",
                config_path.display(),
                e.kind()
            );
            return ExitCode::FAILURE;
        }
    };
    let raw = match crate::config::parse_raw(&source, &config_path.display().to_string()) {
        Ok(raw) => raw,
        Err(e) => {
            eprintln!("portcullis: invalid configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(admin) = raw.admin else {
        eprintln!("portcullis: no [admin] listener is configured");
        return ExitCode::FAILURE;
    };
    let listen = admin
        .listen
        .as_deref()
        .unwrap_or(crate::config::DEFAULT_ADMIN_LISTEN);
    let Ok(mut addr) = listen.parse::<std::net::SocketAddr>() else {
        eprintln!("portcullis: admin.listen is not an address");
        return ExitCode::FAILURE;
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    match crate::server::admin::probe(addr, path).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("portcullis: {path} says not ready");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("portcullis: cannot reach the admin listener at {addr} ({e})");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter_spec;

    #[test]
    fn client_triggered_library_warnings_are_capped_unless_named() {
        assert_eq!(log_filter_spec(None), "info,rustls=error");
        assert_eq!(log_filter_spec(Some("warn")), "warn,rustls=error");
        assert_eq!(
            log_filter_spec(Some("info,rustls=debug")),
            "info,rustls=debug"
        );
        for spec in [None, Some("debug")] {
            assert!(
                tracing_subscriber::EnvFilter::try_new(log_filter_spec(spec)).is_ok(),
                "{spec:?}"
            );
        }
    }
}
