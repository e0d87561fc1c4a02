//! Which runtimes this host runs and how each is launched. The Python and Node.js bootstraps are
//! our own Runtime API clients, embedded in the binary and installed under the data directory,
//! mounted read-only at `/var/runtime`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lamina_core::function::Runtimes;

const PYTHON_BOOTSTRAP: &str = include_str!("../../../runtimes/python/bootstrap.py");
const NODE_BOOTSTRAP: &str = include_str!("../../../runtimes/node/bootstrap.mjs");

/// How a runtime is started inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// `bootstrap` from `/var/task`, else `/opt` (`provided*`).
    Custom,
    /// An interpreter of the host running one of our bootstraps.
    Interpreter { program: String, args: Vec<String> },
}

#[derive(Debug, Clone)]
pub struct Catalogue {
    launches: BTreeMap<String, Launch>,
    /// Host directory mounted at `/var/runtime`.
    pub runtime_dir: PathBuf,
    /// The host's bash, which sandboxes run as `/bin/sh` (as Lambda's images do).
    pub bash: Option<PathBuf>,
    /// The SDK directory (see [`crate::sdk`]), mounted at `/var/runtime/sdk`.
    pub sdk_dir: Option<PathBuf>,
}

impl Catalogue {
    /// Detects the runtimes of this host and installs the bootstraps into `runtime_dir`.
    pub fn install(runtime_dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(runtime_dir)?;
        std::fs::write(runtime_dir.join("bootstrap.py"), PYTHON_BOOTSTRAP)?;
        std::fs::write(runtime_dir.join("bootstrap.mjs"), NODE_BOOTSTRAP)?;
        let mut launches = BTreeMap::new();
        for custom in ["provided", "provided.al2", "provided.al2023"] {
            launches.insert(custom.to_owned(), Launch::Custom);
        }
        for dir in ["/usr/bin", "/usr/local/bin"] {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(minor) = name.strip_prefix("python3.") else {
                    continue;
                };
                if minor.is_empty() || !minor.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                // -S: no site module (it scans site-packages on every start); -B: no .pyc writes
                // to the read-only code directory.
                launches.entry(name.clone()).or_insert(Launch::Interpreter {
                    program: format!("{dir}/{name}"),
                    args: vec!["-S".into(), "-B".into(), "/var/runtime/bootstrap.py".into()],
                });
            }
            let node = Path::new(dir).join("node");
            if let Some(major) = node_major(&node) {
                launches
                    .entry(format!("nodejs{major}.x"))
                    .or_insert(Launch::Interpreter {
                        program: node.display().to_string(),
                        args: vec!["/var/runtime/bootstrap.mjs".into()],
                    });
            }
        }
        Ok(Self {
            launches,
            runtime_dir: runtime_dir.to_owned(),
            bash: ["/usr/bin/bash", "/bin/bash"]
                .into_iter()
                .map(PathBuf::from)
                .find(|path| path.is_file()),
            sdk_dir: None,
        })
    }

    /// Sandboxes mount `sdk_dir` (made if missing) at `/var/runtime/sdk`.
    pub fn with_sdk_dir(mut self, sdk_dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(crate::sdk::python_dir(sdk_dir))?;
        std::fs::create_dir_all(self.runtime_dir.join("sdk"))?;
        self.sdk_dir = Some(sdk_dir.to_owned());
        Ok(self)
    }

    /// A Python interpreter of the host, to install the Python SDK with.
    pub fn python(&self) -> Option<PathBuf> {
        self.zygotes()
            .map(|(program, _)| PathBuf::from(program))
            .find(|program| {
                program
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with("python3"))
            })
    }

    pub fn launch(&self, runtime: &str) -> Option<&Launch> {
        self.launches.get(runtime)
    }

    /// Every interpreter launch (program and arguments), once each: the zygotes sandboxes
    /// can be built with.
    pub fn zygotes(&self) -> impl Iterator<Item = (String, Vec<String>)> + '_ {
        let mut seen = std::collections::BTreeSet::new();
        self.launches
            .values()
            .filter_map(move |launch| match launch {
                Launch::Interpreter { program, args } if seen.insert(program.clone()) => {
                    Some((program.clone(), args.clone()))
                }
                _ => None,
            })
    }

    /// The runtimes offered to CreateFunction.
    pub fn runtimes(&self) -> Runtimes {
        Runtimes(self.launches.keys().cloned().collect())
    }
}

/// The major version of the Node.js at `node`, if there is one.
fn node_major(node: &Path) -> Option<u32> {
    let output = std::process::Command::new(node)
        .arg("--version")
        .output()
        .ok()?;
    let version = String::from_utf8(output.stdout).ok()?;
    version
        .trim()
        .strip_prefix('v')?
        .split('.')
        .next()?
        .parse()
        .ok()
}
