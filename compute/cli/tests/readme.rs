//! The documentation's commands, run as written. Needs the module built next to the binaries
//! (`cargo build --workspace`, which ci/test does first), as `tests/cli.rs` does.
//!
//! **Which files.** README.md, then every `docs/*.md`, sorted by file name; each file's lines in
//! the order they appear. A failure names the file and line (`docs/cli.md:42`).
//!
//! **Which lines.** Every line of those files' shell blocks (fenced as `sh`, `bash`, `shell`,
//! `console` or with no language), with a leading `$ ` prompt removed and lines ending in `\`
//! joined to the next, that runs `batch`, `redisclient` or `autoloc`: the program of one of its
//! commands (split at `|`, `&&`, `||`, `;` and `&` outside quotes, up to a `#` comment; the
//! program is the first word after any `NAME=value` assignments) is one of them, bare or as
//! `target/release/<name>` or `target/debug/<name>`. `cargo run --bin <name>` is refused with
//! a message (write `target/release/<name>`), so that no CLI command escapes this test. Lines of
//! other programs (`redis-server`, `redis-cli`, `ci/demo`, `cargo`) are not run here; the guests
//! the docs build with `cargo` are built first (`ci/guests`, which ci/test runs before the tests).
//!
//! **How.** Each line runs as written with `bash -o pipefail -c`, from the repository root (so
//! relative paths, such as `data/autoloc/social.json`, resolve as they do for a reader who
//! follows the docs from there), with this build's debug binaries first on `PATH` and
//! `target/release/<name>` / `target/debug/<name>` rewritten to the debug binary: the same
//! program, built by `cargo test`.
//!
//! **Servers.** A line without a `redis://` URL uses the embedded default (a private server the
//! binary starts). A line with one runs against a test server that this test starts when the
//! first such line comes (the module with its default arguments, as the docs start it), and
//! keeps for the rest, one server for every file: every `redis://HOST[:PORT]` in the line
//! becomes `redis://127.0.0.1:<test port>`, a `/db` kept. Lines run in order, file after file,
//! so what one line loads or sets, a later one reads; a file's commands that depend on each
//! other (`autoloc load` before `autoloc call`) belong together in that file, in that order. A
//! URL with a user or password fails the test: the test server has no ACL users or password;
//! add them here before the docs use one.
//!
//! **Skipped, by rule.** A line with `--transport rdma` needs an RDMA device (see
//! `ci/rxe-testbed`); it is skipped and the reason printed.
//!
//! **Passing.** Each line exits 0 within [`DEADLINE`], and every count of errors it prints
//! shows no failure: a text line `errors N` (`batch`'s failed invocations) is 0, and so is every
//! `"errors"` field of JSON output (nested too: `autoloc stats --json`, `autoloc placement
//! --json`) and the `errors` column of a table (`autoloc stats`), less the `pushbacks` beside
//! it: those counters count a pushed-back call as a storage-side error, and its invocation was
//! finished compute-side. At least one line of each of the three programs must have run, and
//! one against the test server, so that a docs or parser change that loses them fails here.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use autoloc::server::RedisServer;

/// The longest one line of the docs may run (the debug build; every line takes a few seconds).
const DEADLINE: Duration = Duration::from_secs(120);

/// The programs whose lines of the docs this test runs.
const PROGRAMS: [&str; 3] = ["batch", "redisclient", "autoloc"];

const BATCH: &str = env!("CARGO_BIN_EXE_batch");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The markdown files whose shell blocks this test runs, relative to the repository root, in
/// the order it runs them: README.md, then `docs/*.md` sorted by file name.
fn doc_files() -> Vec<String> {
    let mut docs: Vec<String> = std::fs::read_dir(repo_root().join("docs"))
        .map(|dir| {
            dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".md"))
                .map(|name| format!("docs/{name}"))
                .collect()
        })
        .unwrap_or_default();
    docs.sort();
    std::iter::once("README.md".to_string())
        .chain(docs)
        .collect()
}

/// A command line of a markdown file: the file, its line number (1-based, of its first line)
/// and text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    file: String,
    number: usize,
    text: String,
}

impl Line {
    /// `file:number`, as a failure names it.
    fn at(&self) -> String {
        format!("{}:{}", self.file, self.number)
    }
}

/// The lines of the shell blocks of `markdown` (the text of `file`), prompts removed and
/// continuations joined.
fn shell_lines(file: &str, markdown: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut in_shell: Option<bool> = None; // Some(is a shell block) inside a fence
    let mut pending: Option<Line> = None;
    for (i, raw) in markdown.lines().enumerate() {
        let trimmed = raw.trim();
        if let Some(info) = trimmed.strip_prefix("```") {
            in_shell = match in_shell {
                None => Some(matches!(
                    info.trim(),
                    "" | "sh" | "bash" | "shell" | "console"
                )),
                Some(_) => None,
            };
            assert!(pending.is_none(), "{file}:{}: `\\` before a fence", i + 1);
            continue;
        }
        if in_shell != Some(true) {
            continue;
        }
        let text = trimmed.strip_prefix("$ ").unwrap_or(trimmed);
        let mut line = pending.take().unwrap_or(Line {
            file: file.to_string(),
            number: i + 1,
            text: String::new(),
        });
        if !line.text.is_empty() {
            line.text.push(' ');
        }
        match text.strip_suffix('\\') {
            Some(head) => {
                line.text.push_str(head.trim_end());
                pending = Some(line);
            }
            None => {
                line.text.push_str(text);
                if !line.text.is_empty() && !line.text.starts_with('#') {
                    out.push(line);
                }
            }
        }
    }
    out
}

/// The commands of a shell line: split at `|`, `&&`, `||`, `;` and `&` outside quotes, up to
/// an unquoted `#` that starts a word.
fn commands(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quote, mut start) = (None, 0);
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(c),
            (None, b'\\') => i += 1,
            (None, b'#') if i == 0 || bytes[i - 1].is_ascii_whitespace() => break,
            // `2>&1`, `&>`: a redirection, not a separator.
            (None, b'&') if i > 0 && matches!(bytes[i - 1], b'>' | b'<') => {}
            (None, b'&') if bytes.get(i + 1) == Some(&b'>') => {}
            (None, b'|' | b'&' | b';') => {
                out.push(&line[start..i]);
                if bytes.get(i + 1) == Some(&c) {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(&line[start..i.min(line.len())]);
    out.into_iter()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

/// The program a command runs: its first word after `NAME=value` assignments, with a
/// `target/release/` or `target/debug/` prefix of one of [`PROGRAMS`] removed.
fn program(command: &str) -> Option<&str> {
    let is_assignment = |w: &str| {
        w.split_once('=').is_some_and(|(name, _)| {
            name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    let word = command.split_whitespace().find(|w| !is_assignment(w))?;
    for dir in ["target/release/", "target/debug/"] {
        if let Some((_, name)) = word.split_once(dir) {
            if PROGRAMS.contains(&name) {
                return Some(name);
            }
        }
    }
    Some(word)
}

/// Which of [`PROGRAMS`] a line runs, if any. Panics on `cargo run --bin <one of them>`.
fn cli_program(line: &Line) -> Option<&'static str> {
    let mut found = None;
    for c in commands(&line.text) {
        let words: Vec<&str> = c.split_whitespace().collect();
        if program(c) == Some("cargo") && words.contains(&"run") {
            if let Some(bin) = words.windows(2).find(|w| w[0] == "--bin").map(|w| w[1]) {
                assert!(
                    !PROGRAMS.contains(&bin),
                    "{}: write `target/release/{bin}`, not `cargo run --bin {bin}`: {}",
                    line.at(),
                    line.text
                );
            }
        }
        if let Some(p) = program(c).and_then(|p| PROGRAMS.iter().find(|&&q| q == p)) {
            found.get_or_insert(*p);
        }
    }
    found
}

/// `line` with `target/release/<name>` and `target/debug/<name>` (with any `./` or other
/// prefix of that word) replaced by `bindir/<name>`.
fn with_binaries(line: &str, bindir: &Path) -> String {
    let mut out = String::new();
    for (i, word) in line.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let name = ["target/release/", "target/debug/"]
            .iter()
            .find_map(|dir| word.split_once(dir).map(|(_, n)| n))
            .filter(|n| PROGRAMS.contains(n));
        match name {
            Some(n) => out.push_str(&bindir.join(n).display().to_string()),
            None => out.push_str(word),
        }
    }
    out
}

/// `line` with every `redis://HOST[:PORT]` made `redis://127.0.0.1:<port>`, `/db` kept.
/// Errors on a URL with a user or password.
fn with_server(line: &str, port: u16) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("redis://") {
        out.push_str(&rest[..at + "redis://".len()]);
        rest = &rest[at + "redis://".len()..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(rest.len());
        let url = &rest[..end];
        let authority = url.split('/').next().unwrap_or_default();
        if authority.contains('@') {
            return Err(format!(
                "redis://{url}: the test server has no user or password (see the doc comment)"
            ));
        }
        out.push_str(&format!("127.0.0.1:{port}"));
        out.push_str(&url[authority.len()..]);
        rest = &rest[end..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Why a line is skipped, if it is.
fn skip_reason(line: &str) -> Option<&'static str> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let rdma = words.windows(2).any(|w| w == ["--transport", "rdma"])
        || words.contains(&"--transport=rdma");
    rdma.then_some("--transport rdma needs an RDMA device (ci/rxe-testbed runs the device tests)")
}

/// Every count of errors `stdout` shows that is not 0 (less the pushbacks beside it), as
/// messages.
fn nonzero_errors(stdout: &str) -> Vec<String> {
    let mut bad = Vec::new();
    fn walk(v: &serde_json::Value, path: &str, bad: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(errors) = m.get("errors") {
                    let pushbacks = m.get("pushbacks").cloned().unwrap_or(0.into());
                    if errors.as_u64().is_none() || errors.as_u64() != pushbacks.as_u64() {
                        bad.push(format!("{path}.errors = {errors}, pushbacks {pushbacks}"));
                    }
                }
                for (k, v) in m {
                    walk(v, &format!("{path}.{k}"), bad);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, &format!("{path}[{i}]"), bad);
                }
            }
            _ => {}
        }
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(stdout.trim()) {
        walk(&v, "", &mut bad);
        return bad;
    }
    // Text: `errors N` lines, and the `errors` column of a table under a header naming it.
    // (errors column, pushbacks column, words per row)
    let mut columns: Option<(usize, Option<usize>, usize)> = None;
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim()) {
            walk(&v, "", &mut bad);
        }
        if words.first() == Some(&"errors") && words.len() > 1 {
            if words[1] != "0" {
                bad.push(line.trim().to_string());
            }
            columns = None;
            continue;
        }
        if let Some(e) = words.iter().position(|w| *w == "errors") {
            let p = words.iter().position(|w| *w == "pushbacks");
            columns = Some((e, p, words.len()));
            continue;
        }
        match columns {
            Some((e, p, n)) if words.len() == n => {
                if words[e] != p.map_or("0", |p| words[p]) {
                    bad.push(line.trim().to_string());
                }
            }
            _ => columns = None,
        }
    }
    bad
}

/// What one line did.
#[derive(Debug)]
struct Ran {
    success: bool,
    status: String,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `line` with bash from the repository root, the binaries first on PATH, killing its
/// process group at [`DEADLINE`].
fn run_line(line: &str, bindir: &Path, scratch: &Path) -> Ran {
    use std::os::unix::process::CommandExt as _;
    let path = format!(
        "{}:{}",
        bindir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (out, err) = (scratch.join("stdout"), scratch.join("stderr"));
    let started = Instant::now();
    let mut child = Command::new("bash")
        .args(["-o", "pipefail", "-c", line])
        .current_dir(repo_root())
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .process_group(0)
        .spawn()
        .expect("bash");
    let (success, status) = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break (s.success(), s.to_string());
        }
        if started.elapsed() > DEADLINE {
            let _ = Command::new("kill")
                .args(["-KILL", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            break (false, format!("killed after {DEADLINE:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
    Ran {
        success,
        status,
        stdout: read(&out),
        stderr: read(&err),
        took: started.elapsed(),
    }
}

#[test]
fn every_cli_command_in_the_docs_runs_as_written() {
    // docs/functions.md loads a guest that `cargo build` of functions/guest makes (a line this
    // test does not run): ci/guests builds them first (ci/test and ci/test --quick run it).
    autoloc::guests::path("degrees_wasm").unwrap();
    let bindir = Path::new(BATCH).parent().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut server: Option<RedisServer> = None;
    let mut ran: Vec<&str> = Vec::new();
    let mut against_server = 0;
    let mut failures = Vec::new();
    let files = doc_files();
    assert!(files.len() > 1, "no docs/*.md beside README.md");
    println!("files, in this order: {}", files.join(", "));
    for file in &files {
        let markdown = std::fs::read_to_string(repo_root().join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        for line in shell_lines(file, &markdown) {
            let Some(prog) = cli_program(&line) else {
                continue;
            };
            if let Some(why) = skip_reason(&line.text) {
                println!("{}: skipped ({why}): {}", line.at(), line.text);
                continue;
            }
            let mut text = with_binaries(&line.text, bindir);
            if text.contains("redis://") {
                let s = server.get_or_insert_with(|| {
                    RedisServer::start(&[])
                        .expect("module built next to the binaries (cargo build --workspace)")
                });
                text =
                    with_server(&text, s.port()).unwrap_or_else(|e| panic!("{}: {e}", line.at()));
                against_server += 1;
            }
            let r = run_line(&text, bindir, scratch.path());
            println!(
                "{}: {} in {:.2} s: {}",
                line.at(),
                r.status,
                r.took.as_secs_f64(),
                line.text
            );
            let errors = nonzero_errors(&r.stdout);
            if !r.success || !errors.is_empty() {
                failures.push(format!(
                    "{}: `{}` ran as `{text}`: {}; errors shown: {errors:?}\nstdout: {}\nstderr: {}",
                    line.at(),
                    line.text,
                    r.status,
                    r.stdout,
                    r.stderr
                ));
            }
            ran.push(prog);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    for p in PROGRAMS {
        assert!(ran.contains(&p), "no line of {} ran {p}", files.join(", "));
    }
    assert!(
        against_server > 0,
        "no line of {} named a server",
        files.join(", ")
    );
}

#[test]
fn lines_are_extracted_as_documented() {
    let md = "text `batch khop 1 1` in prose\n\
              ```sh\n\
              $ batch khop 1 10   # a comment | with a pipe\n\
              autoloc --redis redis://127.0.0.1:6380 \\\n    load rmat --scale 9\n\
              printf '1 2\\n' | autoloc load snap /dev/stdin\n\
              AUTOLOC_RDMA_DEVICE=rxe0 target/release/batch khop 1 1 --transport rdma\n\
              redis-cli -p 6380 PING\n\
              # only a comment\n\
              ```\n\
              ```rust\n\
              batch(1);\n\
              ```\n\
              ```\n\
              ./target/debug/redisclient khop 1 1 && echo done\n\
              ```\n";
    let lines = shell_lines("docs/x.md", md);
    let progs: Vec<(usize, Option<&str>)> =
        lines.iter().map(|l| (l.number, cli_program(l))).collect();
    assert_eq!(
        progs,
        [
            (3, Some("batch")),
            (4, Some("autoloc")),
            (6, Some("autoloc")),
            (7, Some("batch")),
            (8, None),
            (15, Some("redisclient")),
        ]
    );
    assert_eq!(
        lines[1].text,
        "autoloc --redis redis://127.0.0.1:6380 load rmat --scale 9"
    );
    assert_eq!(lines[0].text, "batch khop 1 10   # a comment | with a pipe");
    assert!(skip_reason(&lines[3].text).is_some());
    assert!(skip_reason(&lines[0].text).is_none());
    assert_eq!(
        with_binaries(&lines[5].text, Path::new("/b")),
        "/b/redisclient khop 1 1 && echo done"
    );
    assert_eq!(
        with_server("x --redis redis://10.0.0.2/3 && y redis://h:6379", 7),
        Ok("x --redis redis://127.0.0.1:7/3 && y redis://127.0.0.1:7".into())
    );
    assert_eq!(
        with_server("batch khop 1 1", 7),
        Ok("batch khop 1 1".into())
    );
    assert_eq!(commands("a 2>&1 | b &> f && c"), ["a 2>&1", "b &> f", "c"]);
    assert!(with_server("batch --redis redis://:pw@h:1", 7).is_err());
    assert_eq!(lines[1].at(), "docs/x.md:4");
    let files = doc_files();
    assert_eq!(files[0], "README.md");
    assert!(files[1..].windows(2).all(|w| w[0] < w[1]));
    assert!(files[1..]
        .iter()
        .all(|f| f.starts_with("docs/") && f.ends_with(".md")));
    let cargo = Line {
        file: "README.md".into(),
        number: 1,
        text: "cargo run --release --bin batch -- khop 1 1".into(),
    };
    assert!(std::panic::catch_unwind(|| cli_program(&cargo)).is_err());
    assert_eq!(
        nonzero_errors("khop: 10 invocations\n  errors 3 (first: NOKEY)\n"),
        ["errors 3 (first: NOKEY)"]
    );
    assert!(nonzero_errors("  errors 0\n").is_empty());
    assert_eq!(
        nonzero_errors(
            "{\"functions\":{\"khop\":{\"errors\":2},\"get\":{\"errors\":3,\"pushbacks\":3}},\"errors\":0}"
        ),
        [".functions.khop.errors = 2, pushbacks 0"]
    );
    assert_eq!(
        nonzero_errors("function calls errors pushbacks\nkhop 10 2 2\nget 3 1 0\n"),
        ["get 3 1 0"]
    );
}
