//! What the server commands share: connecting to the project, asking for confirmation,
//! Ctrl-C, colours and waiting.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dstack_client::Client;
use dstack_client::config::{CliConfig, ProjectEnv};

use crate::{config_path, fail};

/// The project a command works on, and a client for its server.
#[derive(Debug)]
pub struct Session {
    pub client: Client,
    pub project: String,
    /// The user's token (names the user's SSH key file, as dstack does).
    pub token: String,
}

/// Resolves the project as dstack does (`--project`, `DSTACK_PROJECT`, the default project)
/// and connects; on failure prints the reason and gives the exit code.
pub fn connect(project: Option<&str>) -> Result<Session, u8> {
    let (config, warning) = CliConfig::load(&config_path());
    if let Some(warning) = warning {
        eprintln!("warning: {warning}");
    }
    let project = config.resolve(project, &ProjectEnv::from_process()).map_err(fail)?;
    let client = Client::new(&project.url, &project.token).map_err(fail)?;
    Ok(Session { client, project: project.name, token: project.token })
}

/// [`connect`], then the run `run_name` of the project ("Run X not found" if there is none).
pub fn connect_to_run(project: Option<&str>, run_name: &str) -> Result<(Session, dstack_api::runs::Run), u8> {
    let session = connect(project)?;
    match session.client.get_run(&session.project, run_name) {
        Ok(run) => Ok((session, run)),
        Err(e) if e.is_not_found() => Err(fail(format!("Run {run_name} not found"))),
        Err(e) => Err(fail(e)),
    }
}

/// Whether standard output gets colours (a terminal, and `NO_COLOR`/`CLICOLOR` allow it).
pub fn stdout_color() -> bool {
    console::colors_enabled()
}

/// Asks `prompt [y/n]:` on the terminal until the answer is y or n. End of input (a script
/// without `-y`) is a no.
pub fn confirm(prompt: &str) -> bool {
    let stdin = std::io::stdin();
    loop {
        print!("{prompt} [y/n]: ");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => {
                println!();
                return false;
            }
            // Typed-ahead or piped answers are not echoed; end the prompt's line.
            Ok(_) if !interactive() => println!(),
            Ok(_) => {}
        }
        match line.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => return true,
            "n" | "no" => return false,
            _ => println!("Please enter y or n"),
        }
    }
}

/// Whether standard input is a terminal (prompts make sense).
pub fn interactive() -> bool {
    std::io::stdin().is_terminal()
}

/// Set once Ctrl-C was pressed. The first call installs the handler, so a command that never
/// asks keeps the default behaviour (Ctrl-C ends the process at once).
pub fn interrupted() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let handler_flag = flag.clone();
        // If a handler cannot be installed, Ctrl-C simply ends the process.
        let _ = ctrlc::set_handler(move || handler_flag.store(true, Ordering::SeqCst));
        flag
    })
    .clone()
}

/// Sleeps `total`, waking early when Ctrl-C is pressed; returns whether it was.
pub fn sleep_unless_interrupted(total: Duration, flag: &AtomicBool) -> bool {
    let deadline = Instant::now() + total;
    while Instant::now() < deadline {
        if flag.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50).min(deadline - Instant::now()));
    }
    flag.load(Ordering::SeqCst)
}

/// The seconds between status polls: 1 s for the first five, then 2 s.
pub fn poll_interval(attempt: u32) -> Duration {
    Duration::from_secs(if attempt < 5 { 1 } else { 2 })
}

/// What a long-running subcommand (`server`, `gateway run`) starts with: logs on stderr at
/// `filter` (else `info`), a multi-thread runtime, and the shutdown signal installed on it
/// before anything else can take a while. `Err` is the exit code after the error is printed.
pub(crate) fn start_daemon(
    filter: &str,
) -> Result<(tokio::runtime::Runtime, impl Future<Output = ()> + Send + 'static), u8> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Err(crate::EXIT_INVALID);
        }
    };
    let shutdown = {
        let _entered = runtime.enter();
        dstack_server::shutdown_signal()
    };
    Ok((runtime, shutdown))
}
