//! Debian packages fetched without installing them: `apt-get download` and `dpkg -x`, from a
//! private apt state per Debian suite.
//!
//! Why private states, even for the host's own suite: the kernels of another release
//! (bullseye's 5.10) are not in the host's sources at all, and adding them to the host's
//! sources would let `apt-get upgrade` pull bullseye packages onto the host. A state of our own
//! (sources.list, lists and cache under the vm cache dir, passed with `-o Dir::...`) changes
//! nothing on the host, needs no root to refresh, and does not depend on whether the host's
//! lists are fresh (a Docker image often ships none). The mirror is the one the host's own
//! sources name, read from `/etc/apt/sources.list{,.d/}`, so that a machine that reaches only
//! its own mirror keeps working.

use std::{
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::cmd::{self, output};

/// The keyring that Debian's `debian-archive-keyring` package installs: it holds the keys of
/// every supported release, bullseye's included.
const ARCHIVE_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Where apt reads the host's sources: the one-line format and the deb822 format.
const SOURCES_LIST: &str = "/etc/apt/sources.list";
const SOURCES_DIR: &str = "/etc/apt/sources.list.d";

/// One private apt state: a sources.list for one Debian suite (and its `-updates` and
/// `-security` suites where the host has them), with its own lists and cache.
pub struct AptState {
    suite: String,
    dir: PathBuf,
    /// A Debian architecture (`arm64`, `s390x`, `armhf`) whose packages this state lists
    /// instead of the host's; None for the host's own.
    arch: Option<String>,
}

impl AptState {
    /// The state for `suite` (e.g. `bullseye`) in `dir`, its sources.list (re)written from the
    /// host's mirrors. Nothing is downloaded until [`AptState::update`].
    pub fn new(suite: &str, dir: &Path) -> Result<Self> {
        Self::with_arch(suite, None, dir)
    }

    /// The state for `suite` with the packages of the Debian architecture `arch` (e.g.
    /// `arm64`) only, as `apt-get -o APT::Architecture=arm64` sees them: for the kernels and
    /// the static busybox of a foreign-architecture guest.
    pub fn for_arch(suite: &str, arch: &str, dir: &Path) -> Result<Self> {
        Self::with_arch(suite, Some(arch), dir)
    }

    fn with_arch(suite: &str, arch: Option<&str>, dir: &Path) -> Result<Self> {
        let state = Self {
            suite: suite.to_owned(),
            dir: dir.to_owned(),
            arch: arch.map(str::to_owned),
        };
        let sources = host_sources()?;
        let codename = host_codename()?;
        let list = private_sources_list(&sources, &codename, suite).with_context(|| {
            format!(
                "no `deb` source for Debian {codename} (component main) in {SOURCES_LIST} or \
                 {SOURCES_DIR}: its mirror is the one used for {suite}'s packages"
            )
        })?;
        for sub in ["lists/partial", "cache/archives/partial"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
        }
        let path = state.sources_list();
        // Rewritten only when it changed, so that apt keeps its lists when nothing did.
        if fs::read_to_string(&path).ok().as_deref() != Some(list.as_str()) {
            fs::write(&path, &list).with_context(|| format!("cannot write {}", path.display()))?;
            let _ = fs::remove_file(state.updated_marker());
        }
        Ok(state)
    }

    fn sources_list(&self) -> PathBuf {
        self.dir.join("sources.list")
    }

    /// Written after a successful `apt-get update` of this state.
    fn updated_marker(&self) -> PathBuf {
        self.dir.join("lists/.egress-updated")
    }

    /// `-o` options that point apt at this state instead of the host's.
    fn options(&self) -> Vec<OsString> {
        let opt = |name: &str, value: &Path| {
            let mut arg = OsString::from(format!("{name}="));
            arg.push(value);
            ["-o".into(), arg]
        };
        let mut args = Vec::new();
        args.extend(opt("Dir::Etc::SourceList", &self.sources_list()));
        args.extend(opt("Dir::Etc::SourceParts", Path::new("/dev/null")));
        args.extend(opt("Dir::State::Lists", &self.dir.join("lists")));
        args.extend(opt("Dir::Cache", &self.dir.join("cache")));
        // As root, apt downloads as the `_apt` user, which cannot write into root's cache dir
        // and falls back to root with a warning on every call; say so up front instead.
        args.extend(opt("APT::Sandbox::User", Path::new("root")));
        if let Some(arch) = &self.arch {
            args.extend(opt("APT::Architecture", Path::new(arch)));
            args.extend(opt("APT::Architectures", Path::new(arch)));
        }
        args
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(self.options());
        cmd
    }

    /// `apt-get update` of this state, unless it was updated before (`force` refreshes).
    pub fn update(&self, force: bool) -> Result<()> {
        if !force && self.updated_marker().exists() {
            return Ok(());
        }
        cmd::run(self.command("apt-get").args(["update", "-q"])).with_context(|| {
            format!(
                "cannot update the private apt state for Debian {} ({})",
                self.suite,
                self.sources_list().display()
            )
        })?;
        fs::write(self.updated_marker(), "")
            .with_context(|| format!("cannot write {}", self.updated_marker().display()))
    }

    /// The names of the packages this state knows that start with `prefix`.
    pub fn package_names(&self, prefix: &str) -> Result<Vec<String>> {
        let names = output(self.command("apt-cache").args(["pkgnames", prefix]))?;
        Ok(names.lines().map(str::to_owned).collect())
    }

    /// `apt-get download package` into `dir` (emptied first); returns the .deb's path.
    pub fn download(&self, package: &str, dir: &Path) -> Result<PathBuf> {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
        }
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        cmd::run(
            self.command("apt-get")
                .args(["download", "-q", package])
                .current_dir(dir),
        )
        .with_context(|| format!("cannot download {package} from Debian {}", self.suite))?;
        let debs: Vec<PathBuf> = fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
            .collect();
        match debs.as_slice() {
            [deb] => Ok(deb.clone()),
            _ => bail!(
                "`apt-get download {package}` left {} .deb files in {}, expected one",
                debs.len(),
                dir.display()
            ),
        }
    }
}

impl AptState {
    /// Downloads `packages` and everything they depend on (not recommends) into `dir`
    /// (emptied first), as `apt-get install --download-only` resolves them against an empty
    /// dpkg status: what a root holding only these packages needs. Returns the .deb files.
    pub fn download_closure(&self, packages: &[&str], dir: &Path) -> Result<Vec<PathBuf>> {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
        }
        let state = dir.join("state");
        let archives = dir.join("archives");
        for sub in [&state, &archives.join("partial")] {
            fs::create_dir_all(sub).with_context(|| format!("cannot create {}", sub.display()))?;
        }
        let status = state.join("status");
        fs::write(&status, "").with_context(|| format!("cannot write {}", status.display()))?;
        let mut cmd = self.command("apt-get");
        for (name, value) in [
            ("Dir::State", &state),
            ("Dir::State::status", &status),
            ("Dir::Cache::archives", &archives),
        ] {
            let mut arg = OsString::from(format!("{name}="));
            arg.push(value);
            cmd.arg("-o").arg(arg);
        }
        // The lock of the host's dpkg is not ours to take: this state installs nothing.
        cmd.args(["-o", "Debug::NoLocking=1"])
            .args([
                "install",
                "-q",
                "-y",
                "--download-only",
                "--no-install-recommends",
            ])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd::run(&mut cmd).with_context(|| {
            format!(
                "cannot download {} and their dependencies from Debian {}",
                packages.join(" "),
                self.suite
            )
        })?;
        let mut debs: Vec<PathBuf> = fs::read_dir(&archives)
            .with_context(|| format!("cannot list {}", archives.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
            .collect();
        debs.sort();
        ensure!(
            !debs.is_empty(),
            "apt-get downloaded no package for {} into {}",
            packages.join(" "),
            archives.display()
        );
        Ok(debs)
    }
}

/// `dpkg -x deb dir`: unpacks a package's files without installing it.
pub fn extract(deb: &Path, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    cmd::run(Command::new("dpkg").arg("-x").arg(deb).arg(dir))
        .with_context(|| format!("cannot unpack {}", deb.display()))
}

/// One `deb` source of the host: a mirror URI, a suite and its components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
}

/// Every `deb` source of the host, from sources.list, `*.list` and `*.sources` (the files apt
/// reads: others, such as `foo.list.disabled`, are ignored as apt ignores them).
fn host_sources() -> Result<Vec<Source>> {
    let mut sources = Vec::new();
    if let Ok(text) = fs::read_to_string(SOURCES_LIST) {
        sources.extend(parse_one_line_sources(&text));
    }
    if let Ok(dir) = fs::read_dir(SOURCES_DIR) {
        let mut paths: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let ext = path.extension().and_then(|e| e.to_str());
            if !matches!(ext, Some("list" | "sources")) {
                continue;
            }
            let text = fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if ext == Some("list") {
                sources.extend(parse_one_line_sources(&text));
            } else {
                sources.extend(parse_deb822_sources(&text));
            }
        }
    }
    Ok(sources)
}

/// `VERSION_CODENAME` of /etc/os-release (`bookworm` on Debian 12).
fn host_codename() -> Result<String> {
    let path = "/etc/os-release";
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let codename = text
        .lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .filter(|value| !value.is_empty())
        .with_context(|| format!("no VERSION_CODENAME in {path}: is this Debian?"))?;
    Ok(codename)
}

/// Parses the one-line format: `deb [options] uri suite component...`.
fn parse_one_line_sources(text: &str) -> Vec<Source> {
    let mut sources = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        else {
            continue;
        };
        let mut rest = rest.trim_start();
        if rest.starts_with('[') {
            let Some(end) = rest.find(']') else {
                continue;
            };
            rest = &rest[end + 1..];
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        sources.push(Source {
            uri: uri.to_owned(),
            suite: suite.to_owned(),
            components: words.map(str::to_owned).collect(),
        });
    }
    sources
}

/// Parses the deb822 format: stanzas of `Types:`, `URIs:`, `Suites:`, `Components:` (and
/// `Enabled: no` to skip one), separated by blank lines.
fn parse_deb822_sources(text: &str) -> Vec<Source> {
    let mut sources = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| -> Vec<String> {
            stanza
                .lines()
                .filter(|line| !line.trim_start().starts_with('#'))
                .find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| value.split_whitespace().map(str::to_owned).collect())
                })
                .unwrap_or_default()
        };
        if !field("Types").iter().any(|t| t == "deb") {
            continue;
        }
        if field("Enabled")
            .first()
            .is_some_and(|v| v.eq_ignore_ascii_case("no"))
        {
            continue;
        }
        let components = field("Components");
        for uri in field("URIs") {
            for suite in field("Suites") {
                sources.push(Source {
                    uri: uri.clone(),
                    suite,
                    components: components.clone(),
                });
            }
        }
    }
    sources
}

/// The sources.list of a private state for `suite`: for each host source of the host's
/// release (`bookworm`, `bookworm-updates`, `bookworm-security`) with component main, the
/// same mirror with `suite` in the codename's place. None if the host has no such source.
fn private_sources_list(sources: &[Source], host_codename: &str, suite: &str) -> Option<String> {
    let mut list = String::from(
        "# Written by `cargo xtask vm`: a private apt state (see xtask/src/vm/apt.rs).\n",
    );
    let mut any = false;
    for source in sources {
        let Some(tail) = source.suite.strip_prefix(host_codename) else {
            continue;
        };
        if !(tail.is_empty() || tail.starts_with('-'))
            || !source.components.iter().any(|c| c == "main")
        {
            continue;
        }
        let line = format!(
            "deb [signed-by={ARCHIVE_KEYRING}] {} {suite}{tail} main\n",
            source.uri
        );
        if !list.contains(&line) {
            list.push_str(&line);
        }
        any = true;
    }
    any.then_some(list)
}

/// Fails with a clear message if `program` (from a Debian package) is missing.
pub fn ensure_program(program: &str, package: &str) -> Result<()> {
    ensure!(
        cmd::on_path(program),
        "`{program}` is not on PATH: install the Debian package {package} (`cargo xtask setup` \
         as root does)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_source_formats() {
        let one_line = "# comment\ndeb [signed-by=/k.gpg arch=amd64] http://mirror.example/debian bookworm main contrib\n\
                        deb-src http://mirror.example/debian bookworm main\n\
                        deb http://security.example/debian-security bookworm-security main # tail\n";
        assert_eq!(
            parse_one_line_sources(one_line),
            [
                Source {
                    uri: "http://mirror.example/debian".into(),
                    suite: "bookworm".into(),
                    components: vec!["main".into(), "contrib".into()],
                },
                Source {
                    uri: "http://security.example/debian-security".into(),
                    suite: "bookworm-security".into(),
                    components: vec!["main".into()],
                },
            ]
        );
        let deb822 = "Types: deb\n# http://snapshot.example/archive\nURIs: http://mirror.example/debian\n\
                      Suites: bookworm bookworm-updates\nComponents: main\nSigned-By: /k.gpg\n\n\
                      Types: deb-src\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n\n\
                      Types: deb\nURIs: http://off.example/\nSuites: bookworm\nComponents: main\nEnabled: no\n";
        let parsed = parse_deb822_sources(deb822);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].suite, "bookworm-updates");
        assert_eq!(parsed[1].uri, "http://mirror.example/debian");
    }

    #[test]
    fn a_private_list_takes_the_hosts_mirrors_for_another_suite() {
        let sources = [
            Source {
                uri: "http://mirror.example/debian".into(),
                suite: "bookworm".into(),
                components: vec!["main".into()],
            },
            Source {
                uri: "http://mirror.example/debian".into(),
                suite: "bookworm-updates".into(),
                components: vec!["main".into()],
            },
            Source {
                uri: "http://security.example/debian-security".into(),
                suite: "bookworm-security".into(),
                components: vec!["main".into()],
            },
            Source {
                uri: "https://vendor.example/apt".into(),
                suite: "cloud-sdk-bookworm".into(),
                components: vec!["main".into()],
            },
            Source {
                uri: "http://mirror.example/debian".into(),
                suite: "bookwormish".into(),
                components: vec!["main".into()],
            },
        ];
        let list = private_sources_list(&sources, "bookworm", "bullseye").unwrap();
        let lines: Vec<&str> = list.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bullseye main",
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bullseye-updates main",
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://security.example/debian-security bullseye-security main",
            ]
        );
        assert!(private_sources_list(&sources[3..], "bookworm", "bullseye").is_none());
    }
}
