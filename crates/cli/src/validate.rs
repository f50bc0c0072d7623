//! `dstack validate [--json] FILE...`: offline configuration checks.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use console::{Term, style};
use dstack_model::configuration::{AnyConfiguration, static_checks};
use dstack_model::{Diagnostic, Severity, parse_configuration};

use crate::{EXIT_INVALID, EXIT_OK, EXIT_USAGE};

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Print the normalized JSON of each valid file, one JSON document per line.
    #[arg(long)]
    pub json: bool,
    /// Configuration files to check (`-` reads standard input).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Checks every file; see the crate docs for exit codes.
pub fn run(args: &ValidateArgs) -> u8 {
    let mut stdout = io::stdout().lock();
    let stderr = Term::stderr();
    let mut any_invalid = false;
    let mut any_unreadable = false;
    for path in &args.files {
        let name = path.display().to_string();
        let text = match read_input(path) {
            Ok(text) => text,
            Err(message) => {
                let _ = stderr.write_line(&format!("{}: {} {message}", name, style("error:").red().bold()));
                any_unreadable = true;
                continue;
            }
        };
        let Some(configuration) = check(&name, &text, &stderr) else {
            any_invalid = true;
            continue;
        };
        if args.json {
            match serde_json::to_string(&configuration) {
                Ok(json) => {
                    let _ = writeln!(stdout, "{json}");
                }
                Err(e) => {
                    let _ = stderr.write_line(&format!("{name}: cannot serialize: {e}"));
                    any_invalid = true;
                }
            }
        } else {
            let _ = writeln!(
                stdout,
                "{name}: {} {} configuration",
                style("valid").green(),
                configuration.type_name()
            );
        }
    }
    if any_unreadable {
        EXIT_USAGE
    } else if any_invalid {
        EXIT_INVALID
    } else {
        EXIT_OK
    }
}

/// Parses and checks one file's text, printing its diagnostics (and the `invalid` verdict) to
/// `stderr`; the configuration when it is valid.
pub(crate) fn check(name: &str, text: &str, stderr: &Term) -> Option<AnyConfiguration> {
    let parsed = parse_configuration(text);
    for diagnostic in &parsed.diagnostics {
        let _ = stderr.write_line(&render(name, diagnostic));
    }
    let Some(configuration) = parsed.configuration else {
        let n_errors = parsed.errors().count();
        let _ = stderr.write_line(&format!(
            "{name}: {} ({n_errors} error{})",
            style("invalid").red().bold(),
            if n_errors == 1 { "" } else { "s" }
        ));
        return None;
    };
    let rule_errors = static_checks(&configuration);
    if !rule_errors.is_empty() {
        for message in &rule_errors {
            let _ = stderr.write_line(&format!("{name}: {} {message}", style("error:").red().bold()));
        }
        let _ = stderr.write_line(&format!("{name}: {}", style("invalid").red().bold()));
        return None;
    }
    Some(configuration)
}

pub(crate) fn read_input(path: &PathBuf) -> Result<String, String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        io::stdin().read_to_string(&mut text).map_err(|e| format!("cannot read standard input: {e}"))?;
        return Ok(text);
    }
    if !path.exists() {
        return Err(format!("configuration file {} does not exist", path.display()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

/// `file:line:col: error: `path`: message` with colours on a terminal, plus a help line.
fn render(file: &str, d: &Diagnostic) -> String {
    let mut out = String::from(file);
    if let Some(pos) = d.pos {
        out.push_str(&format!(":{}:{}", pos.line, pos.col));
    }
    let label = match d.severity {
        Severity::Error => style("error:").red().bold(),
        Severity::Warning => style("warning:").yellow().bold(),
    };
    out.push_str(&format!(": {label} "));
    if !d.path.is_empty() {
        out.push_str(&format!("`{}`: ", d.path));
    }
    out.push_str(&d.message);
    if let Some(help) = &d.help {
        out.push_str(&format!("\n  {} {help}", style("help:").cyan().bold()));
    }
    out
}
