//! `polyhost dlq`: the dead letters of a plugin, read and replayed through
//! [`polyhost::dlq`].

use std::process::ExitCode;

use anyhow::Result;
use polyhost::connections::Kafka;
use polyhost::dlq::{self, ReplayRequest, Selection};

use crate::cli::DlqCommand;

pub async fn run(kafka: &Kafka, command: DlqCommand) -> Result<ExitCode> {
    match command {
        DlqCommand::List { plugin, json } => {
            let letters = dlq::list(kafka, &plugin).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
                return Ok(ExitCode::SUCCESS);
            }
            if letters.is_empty() {
                println!("no dead letters for `{plugin}`");
                return Ok(ExitCode::SUCCESS);
            }
            crate::table::dead_letters(&letters);
            println!("{} dead letter(s)", letters.len());
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Show {
            plugin,
            offset,
            partition,
        } => {
            let d = dlq::show(kafka, &plugin, partition, offset).await?;
            println!("{}", serde_json::to_string_pretty(&d)?);
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Replay {
            plugin,
            offset,
            partition,
            all,
            reason,
            dry_run,
            force,
            json,
        } => {
            let selection = if all {
                Selection::All {
                    reason_contains: reason,
                }
            } else {
                Selection::Offsets(offset.into_iter().map(|o| (partition, o)).collect())
            };
            let by = format!(
                "cli:{}",
                std::env::var("USER").unwrap_or_else(|_| "unknown".into())
            );
            let request = ReplayRequest {
                plugin,
                selection,
                dry_run,
                force,
                by,
            };
            let outcomes = dlq::replay(kafka, &request).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&outcomes)?);
            } else {
                crate::table::replay_outcomes(&outcomes);
            }
            // Named dead letters that were refused fail the command; `--all` skips the
            // replayed ones by design.
            let failed = !all && outcomes.iter().any(|o| o.refused());
            if failed {
                eprintln!("polyhost: some dead letters were not replayed");
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
