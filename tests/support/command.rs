//! Commands a test runs to their end, as a user would: `kubectl apikey` (the `kubectl-apikey`
//! binary), kubectl, helm, curl. Each run has a deadline; what it printed and how it exited are
//! checked on the [`Run`].

use std::ffi::OsString;
use std::fmt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The plugin binary.
pub const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-apikey");

/// Longer than `create`'s own default wait for the controller (60 s).
pub const RUN_DEADLINE: Duration = Duration::from_secs(90);

/// One run of the plugin: what it printed and how it exited.
pub struct Run {
    pub command: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {:?}\n--- stdout:\n{}--- stderr:\n{}---",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

impl Run {
    /// Whether it exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Asserts the exit code; returns the run for further checks.
    #[track_caller]
    pub fn exits(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "unexpected exit code\n{self}");
        self
    }

    /// Asserts that stdout or stderr (`stream`) contains every one of `parts`.
    #[track_caller]
    pub fn says(self, stream: &str, parts: &[&str]) -> Self {
        let text = match stream {
            "stdout" => &self.stdout,
            "stderr" => &self.stderr,
            other => panic!("no stream {other}"),
        };
        for part in parts {
            assert!(text.contains(part), "{stream} does not contain {part:?}\n{self}");
        }
        self
    }

    /// Asserts the token appears in neither stdout nor stderr.
    #[track_caller]
    pub fn never_shows(&self, token: &str) {
        assert!(!self.stdout.contains(token) && !self.stderr.contains(token), "the token leaked\n{self}");
    }

    /// Asserts the token is not on stderr (an issuing command prints it on stdout).
    #[track_caller]
    pub fn never_shows_on_stderr(&self, token: &str) {
        assert!(!self.stderr.contains(token), "the token is on stderr\n{self}");
    }

    /// The same run with its stdout left out, for a leak check of an issuing command.
    pub fn stderr_only(&self) -> Run {
        Run {
            command: format!("{} (stderr only)", self.command),
            code: self.code,
            stdout: String::new(),
            stderr: self.stderr.clone(),
        }
    }

    /// The table rows (after the header) whose first column is `first`, split into cells.
    pub fn rows_starting(&self, first: &str) -> Vec<Vec<String>> {
        self.stdout
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .filter(|cells| cells.first().map(String::as_str) == Some(first))
            .collect()
    }

    /// The first line with its columns one space apart: `NAME PHASE KEY ID ...`.
    pub fn header(&self) -> String {
        self.stdout.lines().next().unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{self}"))
    }
}

/// A command line, built up, then [`CommandLine::run`] with a deadline: the plugin, kubectl
/// running it, or any other program a test runs to its end (helm, curl).
pub struct CommandLine {
    program: OsString,
    args: Vec<String>,
    stdin: Option<String>,
    env: Vec<(String, OsString)>,
    deadline: Duration,
}

/// `kubectl-apikey ARGS... -n NAMESPACE`: the namespace goes last, as a user types it.
pub fn apikey(ns: &str, args: &[&str]) -> CommandLine {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.extend(["-n".to_string(), ns.to_string()]);
    CommandLine::new(PLUGIN).args(&args)
}

impl CommandLine {
    /// `program` with no arguments yet, stdin from /dev/null and a deadline of [`RUN_DEADLINE`].
    pub fn new(program: impl Into<OsString>) -> Self {
        Self { program: program.into(), args: Vec::new(), stdin: None, env: Vec::new(), deadline: RUN_DEADLINE }
    }

    pub fn args(mut self, args: &[impl AsRef<str>]) -> Self {
        self.args.extend(args.iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// Fails the run if it has not finished within `deadline` (else [`RUN_DEADLINE`]).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Writes `text` to the command's stdin (which is otherwise /dev/null).
    pub fn stdin(mut self, text: &str) -> Self {
        self.stdin = Some(text.to_string());
        self
    }

    /// Runs `kubectl apikey ...` instead, with `path` as the PATH kubectl finds plugins on.
    pub fn through_kubectl(mut self, path: OsString) -> Self {
        self.program = "kubectl".into();
        self.args.insert(0, "apikey".into());
        self.env("PATH", path)
    }

    /// Runs the command on a pseudo-terminal (util-linux `script`), as at a person's terminal:
    /// its stdout and stderr arrive merged, on stdout.
    pub fn on_terminal(mut self) -> Self {
        let quote = |word: &str| format!("'{}'", word.replace('\'', r"'\''"));
        let line: Vec<String> =
            std::iter::once(self.program.to_string_lossy().into_owned()).chain(self.args).map(|w| quote(&w)).collect();
        self.program = "script".into();
        self.args = vec!["--quiet".into(), "--return".into(), "--command".into(), line.join(" "), "/dev/null".into()];
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }

    /// Runs it to the end (killed and failed after its deadline).
    pub async fn run(self) -> Run {
        let program = Path::new(&self.program).file_name().unwrap_or(&self.program).to_string_lossy().into_owned();
        let command = std::iter::once(program).chain(self.args.iter().cloned()).collect::<Vec<_>>().join(" ");
        let mut child = Command::new(&self.program);
        child
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = child.spawn().unwrap_or_else(|e| panic!("start `{command}`: {e}"));
        // Written beside the wait, so a program that answers before it reads cannot fill a pipe
        // and stall. A program may also exit without reading stdin at all (a bad argument is
        // found first): a broken pipe is its answer, judged by its exit code and output.
        let feed = {
            let stdin = self.stdin.map(|text| (child.stdin.take().expect("piped stdin"), text));
            let command = command.clone();
            async move {
                if let Some((mut stdin, text)) = stdin {
                    match stdin.write_all(text.as_bytes()).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                        Err(e) => panic!("write stdin of `{command}`: {e}"),
                    }
                }
            }
        };
        let deadline = self.deadline;
        let ((), output) = tokio::time::timeout(deadline, futures::future::join(feed, child.wait_with_output()))
            .await
            .unwrap_or_else(|_| panic!("`{command}` did not finish within {deadline:?}"));
        let output = output.unwrap_or_else(|e| panic!("wait for `{command}`: {e}"));
        Run {
            command,
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}
