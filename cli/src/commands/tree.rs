use std::collections::BTreeMap;

use worlds::db::WorldRecord;

use super::Context;
use crate::ui;

/// Draws the hierarchy of worlds, as pstree draws processes.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Draw with ASCII characters only.
    #[arg(short = 'A', long)]
    ascii: bool,
    /// Print the hierarchy as JSON on stdout: an array of root worlds, each
    /// `{"name": ..., "children": [...]}`.
    #[arg(long)]
    json: bool,
}

/// A world and its children, for JSON output.
#[derive(Debug, serde::Serialize)]
struct Node {
    name: String,
    children: Vec<Node>,
}

pub fn run(args: Args, context: &Context) -> anyhow::Result<u8> {
    let store = context.open_store()?;
    let worlds = store.worlds()?;
    let roots = build(&worlds);

    if args.json {
        ui::print_json(&roots)?;
        return Ok(ui::EXIT_OK);
    }
    let glyphs = if args.ascii { &ASCII } else { &UNICODE };
    for root in &roots {
        for line in draw(root, glyphs) {
            println!("{line}");
        }
    }
    Ok(ui::EXIT_OK)
}

/// Builds the forest of worlds, children sorted by name.
fn build(worlds: &[WorldRecord]) -> Vec<Node> {
    let mut children: BTreeMap<Option<&str>, Vec<&str>> = BTreeMap::new();
    for world in worlds {
        children
            .entry(world.parent.as_ref().map(|parent| parent.as_str()))
            .or_default()
            .push(world.name.as_str());
    }
    fn node(name: &str, children: &BTreeMap<Option<&str>, Vec<&str>>) -> Node {
        let mut names = children.get(&Some(name)).cloned().unwrap_or_default();
        names.sort_unstable();
        Node {
            name: name.to_owned(),
            children: names
                .into_iter()
                .map(|child| node(child, children))
                .collect(),
        }
    }
    let mut roots = children.get(&None).cloned().unwrap_or_default();
    roots.sort_unstable();
    roots
        .into_iter()
        .map(|root| node(root, &children))
        .collect()
}

/// The line-drawing pieces of a tree.
struct Glyphs {
    /// Joins a world to its only child.
    only: &'static str,
    /// Joins a world to the first of several children.
    first: &'static str,
    /// Starts a middle child.
    middle: &'static str,
    /// Starts the last child.
    last: &'static str,
    /// Continues the line past a child that has later siblings.
    through: &'static str,
    /// Indents past the last child.
    blank: &'static str,
}

const UNICODE: Glyphs = Glyphs {
    only: "───",
    first: "─┬─",
    middle: " ├─",
    last: " └─",
    through: " │ ",
    blank: "   ",
};

const ASCII: Glyphs = Glyphs {
    only: "---",
    first: "-+-",
    middle: " |-",
    last: " `-",
    through: " | ",
    blank: "   ",
};

/// Draws `node` and its descendants as pstree does: the first child on the
/// parent's line, later children below it, aligned after the parent's name.
fn draw(node: &Node, glyphs: &Glyphs) -> Vec<String> {
    let name = &node.name;
    let pad = " ".repeat(name.chars().count());
    let mut lines = Vec::new();
    let count = node.children.len();
    if count == 0 {
        return vec![name.clone()];
    }
    for (index, child) in node.children.iter().enumerate() {
        let child_lines = draw(child, glyphs);
        let (head, rest) = match (count, index) {
            (1, _) => (
                format!("{name}{}", glyphs.only),
                format!("{pad}{}", glyphs.blank),
            ),
            (_, 0) => (
                format!("{name}{}", glyphs.first),
                format!("{pad}{}", glyphs.through),
            ),
            (_, i) if i + 1 == count => (
                format!("{pad}{}", glyphs.last),
                format!("{pad}{}", glyphs.blank),
            ),
            _ => (
                format!("{pad}{}", glyphs.middle),
                format!("{pad}{}", glyphs.through),
            ),
        };
        for (line_index, line) in child_lines.into_iter().enumerate() {
            let prefix = if line_index == 0 { &head } else { &rest };
            lines.push(format!("{prefix}{line}"));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(name: &str) -> Node {
        Node {
            name: name.into(),
            children: Vec::new(),
        }
    }

    fn node(name: &str, children: Vec<Node>) -> Node {
        Node {
            name: name.into(),
            children,
        }
    }

    #[test]
    fn draw_single_world() {
        assert_eq!(draw(&leaf("base"), &UNICODE), ["base"]);
    }

    #[test]
    fn draw_chain() {
        let tree = node("base", vec![node("web", vec![leaf("web-fix")])]);
        assert_eq!(draw(&tree, &UNICODE), ["base───web───web-fix"]);
    }

    #[test]
    fn draw_siblings_and_nesting() {
        let tree = node(
            "base",
            vec![
                node("a", vec![leaf("a1"), leaf("a2")]),
                leaf("b"),
                node("c", vec![leaf("c1")]),
            ],
        );
        let expected = [
            "base─┬─a─┬─a1",
            "     │   └─a2",
            "     ├─b",
            "     └─c───c1",
        ];
        assert_eq!(draw(&tree, &UNICODE), expected);
    }

    #[test]
    fn draw_ascii() {
        let tree = node("p", vec![leaf("x"), leaf("y")]);
        assert_eq!(draw(&tree, &ASCII), ["p-+-x", "  `-y"]);
    }
}
