use std::time::Instant;

use worlds::runtime::RunConfig;
use worlds::store::StoreError;
use worlds::WorldName;

use super::run_args::RunArgs;
use super::Context;
use crate::ui;

/// Creates CHILD as a writable snapshot of PARENT.
///
/// CHILD also gets a base: a read-only snapshot of PARENT taken at the same
/// instant, which diff and merge compare against. It takes milliseconds,
/// whatever the size of PARENT. CHILD keeps PARENT's network and limits,
/// unless options here replace them, for every start.
///
/// With `--with SIBLING` (repeatable), CHILD also gets the changes of those
/// children of PARENT, merged in order, to test them together. Given two or
/// more worlds instead of PARENT (`world create NEW A B`), they are the
/// siblings and their common parent is PARENT. A conflict between them is
/// reported as a merge reports it, exit status 1, and CHILD is not made.
///
/// Alias: `wcreate CHILD PARENT`, or `wcreate NEW A B` for siblings A and B.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the new world.
    child: WorldName,
    /// The world to snapshot, or two or more sibling worlds to combine.
    #[arg(required = true, value_name = "PARENT")]
    sources: Vec<WorldName>,
    /// A child of PARENT whose changes the new world also gets (repeatable).
    #[arg(long = "with", value_name = "SIBLING")]
    with: Vec<WorldName>,
    /// Print the new world as JSON on stdout; with siblings, the outcome of
    /// merging each.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let started = Instant::now();
    let mut store = context.open_store()?;
    let (parent, siblings) = if args.sources.len() == 1 {
        (args.sources[0].clone(), args.with)
    } else {
        let first = &args.sources[0];
        let Some(parent) = store.world(first)?.parent else {
            return Err(StoreError::NoBase {
                name: first.clone(),
            }
            .into());
        };
        let mut siblings = args.sources.clone();
        siblings.extend(args.with);
        (parent, siblings)
    };

    let mut seen = std::collections::BTreeSet::new();
    if let Some(twice) = siblings.iter().find(|sibling| !seen.insert(*sibling)) {
        return Err(ui::UsageError {
            message: format!("sibling `{twice}` is named twice"),
            hint: Some("name each sibling once".into()),
        }
        .into());
    }

    if siblings.is_empty() {
        store.create_child(&args.child, &parent)?;
        let config = args.run.apply_to(store.run_config(&parent)?);
        if config != RunConfig::default() {
            store.configure(&args.child, &config)?;
        }
        let elapsed = started.elapsed();
        if args.json {
            ui::print_json(&store.details(&args.child)?)?;
        }
        ui::status(
            context.quiet,
            format_args!(
                "created world `{}` from `{parent}` in {}",
                args.child,
                ui::format_duration(elapsed)
            ),
        );
        return Ok(ui::EXIT_OK);
    }

    let outcome = store.create_combined(&args.child, &parent, &siblings)?;
    if outcome.created {
        let config = args.run.apply_to(store.run_config(&parent)?);
        if config != RunConfig::default() {
            store.configure(&args.child, &config)?;
        }
    }
    if args.json {
        ui::print_json(&outcome)?;
    }
    if !outcome.created {
        if !args.json {
            // A sibling's changes meet those of the siblings before it.
            for (index, merge) in outcome.merges.iter().enumerate() {
                let earlier: Vec<String> = outcome.merges[..index]
                    .iter()
                    .map(|earlier| format!("`{}`", earlier.sibling))
                    .collect();
                let before = if earlier.is_empty() {
                    format!("`{parent}`")
                } else {
                    earlier.join(" and ")
                };
                let sibling = format!("`{}`", merge.sibling);
                for conflict in &merge.plan.conflicts {
                    let line = super::merge::describe_conflict_between(conflict, &sibling, &before);
                    println!("{line}");
                }
            }
        }
        let blocked = outcome
            .merges
            .last()
            .map(|merge| merge.sibling.to_string())
            .unwrap_or_default();
        ui::status(
            context.quiet,
            format_args!(
                "world `{}` not created: the changes of `{blocked}` conflict with what came before them",
                args.child
            ),
        );
        return Ok(ui::EXIT_BLOCKED);
    }
    let names: Vec<String> = siblings.iter().map(|name| format!("`{name}`")).collect();
    ui::status(
        context.quiet,
        format_args!(
            "created world `{}` from `{parent}` with the changes of {} in {}",
            args.child,
            names.join(", "),
            ui::format_duration(started.elapsed())
        ),
    );
    Ok(ui::EXIT_OK)
}
