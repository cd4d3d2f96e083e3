//! Command-line flags of the `egress-monitor` binary.
//!
//! Flags cover what differs from one router to the next (interfaces, address, polling); the
//! rest lives in the TOML file. Each flag overrides one file key, and clap parses every value,
//! so a bad flag is reported by clap with the flag's name before any file is read.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ipnet::IpNet;

use crate::config::{Overrides, check_state_dir, parse_duration, parse_listen, parse_prefix};

/// Log filter used when neither `--log-level` nor `RUST_LOG` says otherwise.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Flags of `egress-monitor`.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "egress-monitor",
    version,
    about = "Count each LAN device's traffic to each destination on a Linux router, with eBPF, \
             and serve it as Prometheus metrics",
    long_about = "Count each LAN device's traffic to each destination on a Linux router, with \
                  eBPF, and serve it as Prometheus metrics.\n\n\
                  egress-monitor hooks TC programs on the LAN interfaces, before NAT, where the \
                  source MAC address still names the device. The kernel only adds up bytes and \
                  packets per (device, destination); the agent reads those counters every poll \
                  interval and serves them on /metrics, with /healthz for liveness.\n\n\
                  Settings come from the TOML file given with --config; every flag below \
                  overrides the file key it names, and a repeated flag (--lan, --local-prefix) \
                  replaces the file's whole list. At least one LAN interface is required.\n\n\
                  Needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or root).",
    after_help = "Example: egress-monitor --config /etc/egress-monitor.toml --lan br-lan"
)]
pub struct Cli {
    /// Without a command, the agent runs.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TOML configuration file; without it, flags and defaults make the whole configuration.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Directory of the learned baselines (state.toml) and the agent's control socket.
    /// Overrides `state_dir` [default: /var/lib/egress-monitor].
    #[arg(long, value_name = "DIR", value_parser = parse_state_dir, global = true)]
    pub state_dir: Option<PathBuf>,

    /// Directory on bpffs where the counter maps and program links are pinned, so counting goes
    /// on across restarts; "" for none. Overrides `pin_dir` [default: /sys/fs/bpf/egress-monitor].
    #[arg(long, value_name = "DIR", global = true)]
    pub pin_dir: Option<String>,

    /// LAN interface to monitor, e.g. br-lan; repeat for several.
    /// Overrides `lan`: the flags replace the file's whole list.
    #[arg(long, value_name = "IFACE", global = true)]
    pub lan: Vec<String>,

    /// Address to serve /metrics and /healthz on, e.g. `0.0.0.0:10100` or `[::]:10100`
    /// (`--web.listen-address` is the same flag, by its name in the Prometheus exporters).
    /// Overrides `listen` [default: 0.0.0.0:10100].
    #[arg(long, visible_alias = "web.listen-address", value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,

    /// Web configuration file for TLS and basic authentication of every endpoint, in the
    /// format of the Prometheus exporters (exporter-toolkit): tls_server_config,
    /// basic_auth_users, http_server_config, rate_limit. Read again when it changes.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,

    /// How often to read the kernel's counters, e.g. 1s or 500ms (100ms to 1h).
    /// Overrides `poll_interval` [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub poll_interval: Option<Duration>,

    /// Extra prefix that is local, not a destination, e.g. 10.8.0.0/24 (the LAN interfaces'
    /// own prefixes always are); repeat for several.
    /// Overrides `local_prefixes`: the flags replace the file's whole list.
    #[arg(long = "local-prefix", value_name = "CIDR", value_parser = parse_prefix)]
    pub local_prefixes: Vec<IpNet>,

    /// Capacity of the kernel's (device, destination) map (16 to 16777216).
    /// Overrides `flow_map_entries` [default: 65536].
    #[arg(long, value_name = "N")]
    pub flow_map_entries: Option<u32>,

    /// How to attach to the LAN interfaces: auto (TCX where the kernel has it, else clsact),
    /// tcx or clsact. Overrides `attach` [default: auto].
    #[arg(long, value_name = "MODE", value_enum)]
    pub attach: Option<crate::config::AttachPolicy>,

    /// How to label a destination whose name is known from DNS or TLS: domain (the registrable
    /// domain, e.g. example.co.uk), host (the full host name) or address (names unused).
    /// Overrides `destination_label` [default: domain].
    #[arg(long, value_name = "MODE", value_enum)]
    pub destination_label: Option<crate::config::LabelMode>,

    /// Check the configuration file and flags, print the effective settings as TOML, and exit
    /// (status 0 if valid).
    #[arg(long)]
    pub check_config: bool,

    /// Log level (error, warn, info, debug, trace) or a filter like "info,monitor=debug"
    /// [default: RUST_LOG if set, else info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// Commands besides running the agent.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Show, extend or reset what a device learned. Talks to the running agent (through the
    /// control socket in the state directory), or edits the state file when none runs.
    Baseline {
        #[command(subcommand)]
        action: BaselineAction,
    },
    /// Stop counting for good (before uninstalling): detach the programs from the LAN
    /// interfaces and remove the pinned maps and links. The agent must not be running.
    Detach,
}

/// `egress-monitor baseline ...`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum BaselineAction {
    /// Show a device's policy, learning period, baseline and the destinations it was seen
    /// talking to, with when.
    Show {
        /// MAC address or name.
        device: String,
    },
    /// Accept a destination into a device's baseline, so that traffic to it is no longer
    /// unexpected: a domain (with its subdomains), an address or a prefix.
    Accept {
        /// MAC address or name.
        device: String,
        /// e.g. vendor.example, 192.0.2.7 or 198.51.100.0/24.
        destination: String,
    },
    /// Forget what a device learned and when it saw each destination: it learns again from
    /// its next traffic, if its policy learns.
    Forget {
        /// MAC address or name.
        device: String,
    },
}

impl BaselineAction {
    /// The request to the agent.
    pub fn request(&self) -> crate::persist::protocol::Request {
        use crate::persist::protocol::Request;
        match self.clone() {
            BaselineAction::Show { device } => Request::Show { device },
            BaselineAction::Accept {
                device,
                destination,
            } => Request::Accept {
                device,
                destination,
            },
            BaselineAction::Forget { device } => Request::Forget { device },
        }
    }
}

fn parse_state_dir(s: &str) -> Result<PathBuf, String> {
    check_state_dir(s)
}

impl Cli {
    /// The values given on the command line, to merge over the configuration file.
    pub fn overrides(&self) -> Overrides {
        fn list<T: Clone>(items: &[T]) -> Option<Vec<T>> {
            (!items.is_empty()).then(|| items.to_vec())
        }
        Overrides {
            lan: list(&self.lan),
            listen: self.listen,
            poll_interval: self.poll_interval,
            local_prefixes: list(&self.local_prefixes),
            flow_map_entries: self.flow_map_entries,
            attach: self.attach,
            destination_label: self.destination_label,
            state_dir: self.state_dir.clone(),
            pin_dir: self.pin_dir.clone(),
        }
    }

    /// The log filter to install: `--log-level`, else `RUST_LOG`, else `info`. The flag wins
    /// because it is the more deliberate choice; `RUST_LOG` is often left in an environment.
    pub fn log_filter(&self) -> String {
        self.log_filter_with(std::env::var("RUST_LOG").ok())
    }

    fn log_filter_with(&self, rust_log: Option<String>) -> String {
        self.log_level
            .clone()
            .or(rust_log.filter(|s| !s.trim().is_empty()))
            .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let argv = std::iter::once("egress-monitor").chain(args.iter().copied());
        Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn parse_error(args: &[&str]) -> clap::Error {
        let argv = std::iter::once("egress-monitor").chain(args.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(cli) => panic!("{args:?} parsed to {cli:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_flags_override_nothing() {
        let cli = parse(&[]);
        assert_eq!(cli.overrides(), Overrides::default());
        assert_eq!(cli.config, None);
        assert!(!cli.check_config);
    }

    #[test]
    fn every_flag_becomes_an_override() {
        let cli = parse(&[
            "--config",
            "/etc/egress-monitor.toml",
            "--lan",
            "br-lan",
            "--lan=wlan0",
            "--listen",
            "[::1]:9100",
            "--poll-interval",
            "500ms",
            "--local-prefix",
            "10.8.0.0/24",
            "--local-prefix",
            "fd00::/8",
            "--flow-map-entries",
            "1024",
            "--destination-label",
            "host",
            "--state-dir",
            "/tmp/egress-state",
            "--check-config",
            "--log-level",
            "debug",
        ]);
        assert_eq!(
            cli.config.as_deref(),
            Some(std::path::Path::new("/etc/egress-monitor.toml"))
        );
        assert!(cli.check_config);
        assert_eq!(
            cli.overrides(),
            Overrides {
                lan: Some(vec!["br-lan".into(), "wlan0".into()]),
                listen: Some("[::1]:9100".parse().unwrap()),
                poll_interval: Some(Duration::from_millis(500)),
                local_prefixes: Some(vec![
                    "10.8.0.0/24".parse().unwrap(),
                    "fd00::/8".parse().unwrap()
                ]),
                flow_map_entries: Some(1024),
                attach: None,
                destination_label: Some(crate::config::LabelMode::Host),
                state_dir: Some("/tmp/egress-state".into()),
                pin_dir: None,
            }
        );
    }

    #[test]
    fn bad_values_are_clap_errors_naming_the_flag() {
        // (arguments, text the error must contain)
        let cases: &[(&[&str], &str)] = &[
            (
                &["--poll-interval", "fast"],
                "invalid value 'fast' for '--poll-interval <DURATION>': invalid duration \"fast\"",
            ),
            (
                &["--listen", "10100"],
                "invalid value '10100' for '--listen <ADDR>': invalid listen address \"10100\"",
            ),
            (
                &["--local-prefix", "10.0.0.0/33"],
                "invalid value '10.0.0.0/33' for '--local-prefix <CIDR>': invalid CIDR prefix",
            ),
            (&["--flow-map-entries=-1"], "'--flow-map-entries <N>'"),
            (&["--flow-map-entries", "many"], "'--flow-map-entries <N>'"),
            (
                &["--destination-label", "fqdn"],
                "invalid value 'fqdn' for '--destination-label <MODE>'",
            ),
        ];
        for (args, expected) in cases {
            let err = parse_error(args);
            assert!(
                matches!(
                    err.kind(),
                    ErrorKind::ValueValidation
                        | ErrorKind::InvalidValue
                        | ErrorKind::UnknownArgument
                ),
                "{args:?}: {err}"
            );
            let text = err.to_string();
            assert!(text.contains(expected), "{args:?}: {text}");
        }
        assert_eq!(
            parse_error(&["--no-such-flag"]).kind(),
            ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn prometheus_names_of_the_web_flags() {
        let cli = parse(&[
            "--web.listen-address",
            "127.0.0.1:9100",
            "--web.config.file",
            "/etc/egress-monitor/web.yml",
        ]);
        assert_eq!(
            cli.overrides().listen,
            Some("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(
            cli.web_config_file.as_deref(),
            Some(std::path::Path::new("/etc/egress-monitor/web.yml"))
        );
        assert_eq!(parse(&[]).web_config_file, None);
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("--web.config.file <FILE>"), "{help}");
        assert!(help.contains("web.listen-address"), "{help}");
    }

    #[test]
    fn help_names_the_overridden_keys() {
        let help = Cli::command().render_long_help().to_string();
        for key in [
            "`lan`",
            "`listen`",
            "`poll_interval`",
            "`local_prefixes`",
            "`flow_map_entries`",
            "`destination_label`",
            "`state_dir`",
        ] {
            assert!(help.contains(key), "help does not mention {key}:\n{help}");
        }
    }

    #[test]
    fn baseline_commands_parse_with_global_flags() {
        let cli = parse(&[
            "baseline",
            "accept",
            "camera",
            "vendor.example",
            "--state-dir",
            "/tmp/s",
        ]);
        assert_eq!(
            cli.state_dir.as_deref(),
            Some(std::path::Path::new("/tmp/s"))
        );
        let Some(Command::Baseline { action }) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(
            action.request(),
            crate::persist::protocol::Request::Accept {
                device: "camera".into(),
                destination: "vendor.example".into()
            }
        );
        assert!(
            parse_error(&["--state-dir", "relative/dir"])
                .to_string()
                .contains("must be absolute")
        );
        assert_eq!(
            parse_error(&["baseline", "show"]).kind(),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn log_filter_prefers_flag_then_rust_log_then_info() {
        let with_flag = parse(&["--log-level", "debug"]);
        let without = parse(&[]);
        // (cli, RUST_LOG, expected)
        let cases = [
            (&with_flag, Some("trace"), "debug"),
            (&with_flag, None, "debug"),
            (&without, Some("warn,monitor=trace"), "warn,monitor=trace"),
            (&without, Some(""), "info"),
            (&without, None, "info"),
        ];
        for (cli, rust_log, expected) in cases {
            assert_eq!(
                cli.log_filter_with(rust_log.map(str::to_owned)),
                expected,
                "RUST_LOG={rust_log:?}"
            );
        }
    }
}
