//! Every import points down a floor: the `use crate::` graph between modules has no circles.
//!
//! The sources are parsed with `syn`, starting from `src/lib.rs` (and, for the binary,
//! `src/main.rs`) and following `mod` declarations. Every path a module names (`use` trees,
//! types, expressions, patterns) that starts with `crate`, `super`, `self` or one of its own
//! submodules is resolved to the module that defines it, following `pub use` re-exports. Then,
//! for every module, the graph between its direct submodules, each standing for everything
//! below it, must be acyclic: `data` and `train` at the top, `data/image` and `data/pipeline`
//! inside `data`, `kernels/block/backward` and `kernels/block/single_channel` inside
//! `kernels/block`, and so on down. A module's own file (its `mod.rs`) is its face: its
//! submodules may use what it defines, and it may use them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// A module, as its path from the crate root (`["kernels", "block", "backward"]`).
type ModPath = Vec<String>;

#[test]
fn the_library_has_no_import_circles() {
    let crate_ = Crate::parse(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"));
    // The walk must have found the crate, or the test would pass on nothing.
    assert!(
        crate_.modules.len() > 40,
        "found {} modules",
        crate_.modules.len()
    );
    let graph = crate_.graph();
    assert!(
        graph.has_edge(&[], "train", "run"),
        "the training loop writes runs: the walk must see that edge"
    );
    let circles = graph.circles();
    assert!(
        circles.is_empty(),
        "import circles (every import must point down a floor):\n{}",
        circles
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_binary_has_no_import_circles() {
    let crate_ = Crate::parse(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs"));
    assert!(
        crate_.modules.len() > 5,
        "found {} modules",
        crate_.modules.len()
    );
    let circles = crate_.graph().circles();
    assert!(
        circles.is_empty(),
        "import circles in the binary:\n{}",
        circles
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The checker itself finds circles: through `crate::`, `super::`, re-exports, nested
/// folders and paths used inline, and not where there are none.
#[test]
fn the_checker_finds_circles_at_every_level() {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "lib.rs",
        "pub mod low; pub mod high; pub mod folder; pub use low::Thing;",
    );
    write(
        "low.rs",
        "pub struct Thing; pub fn f() { crate::high::g(); }",
    );
    write(
        "high.rs",
        "use crate::Thing; pub fn g() -> Option<Thing> { None }",
    );
    write(
        "folder/mod.rs",
        "mod a; mod b; pub use a::A; pub fn face() -> A { A }",
    );
    write(
        "folder/a.rs",
        "pub struct A; fn x() { let _ = super::b::B; let _ = super::face(); }",
    );
    write(
        "folder/b.rs",
        "use super::A; pub struct B; fn y() -> Option<A> { None }",
    );
    let circles = Crate::parse(&dir.path().join("lib.rs")).graph().circles();
    let found: Vec<BTreeSet<String>> = circles.iter().map(Circle::members).collect();
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        found,
        vec![set(&["folder::a", "folder::b"]), set(&["high", "low"])],
        "{circles:?}"
    );

    // The same crate without the two back edges has none.
    write("low.rs", "pub struct Thing; pub fn f() {}");
    write(
        "folder/a.rs",
        "pub struct A; fn x() { let _ = super::face(); }",
    );
    let circles = Crate::parse(&dir.path().join("lib.rs")).graph().circles();
    assert!(circles.is_empty(), "{circles:?}");
}

/// One module of the crate: its file, its submodules, what it re-exports and what it names.
#[derive(Default)]
struct Module {
    file: PathBuf,
    children: BTreeSet<String>,
    /// `pub use` re-exports: the name as seen here, and the full path it stands for.
    reexports: BTreeMap<String, ModPath>,
    /// Every path this module names that may point into the crate, already made absolute.
    references: Vec<ModPath>,
}

struct Crate {
    modules: BTreeMap<ModPath, Module>,
}

impl Crate {
    fn parse(root: &Path) -> Self {
        let mut crate_ = Crate {
            modules: BTreeMap::new(),
        };
        crate_.add_file(Vec::new(), root, true);
        crate_
    }

    /// Adds the module `path` whose source is the file `file`; `owns_folder` says whether its
    /// submodules' files are in `file`'s folder (lib.rs, main.rs, mod.rs) or in a folder named
    /// after it.
    fn add_file(&mut self, path: ModPath, file: &Path, owns_folder: bool) {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let syntax =
            syn::parse_file(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", file.display()));
        let folder = if owns_folder {
            file.parent().unwrap().to_path_buf()
        } else {
            file.with_extension("")
        };
        self.add_items(path, file, &folder, &syntax.items);
    }

    fn add_items(&mut self, path: ModPath, file: &Path, folder: &Path, items: &[syn::Item]) {
        self.modules.entry(path.clone()).or_default().file = file.to_path_buf();
        let mut nested = Vec::new();
        for item in items {
            if let syn::Item::Mod(module) = item {
                let name = module.ident.to_string();
                self.modules
                    .get_mut(&path)
                    .unwrap()
                    .children
                    .insert(name.clone());
                nested.push((name, module));
            }
        }
        // The paths, once the submodules are known (a relative path may start with one).
        let children = self.modules[&path].children.clone();
        let mut collector = Collector {
            here: &path,
            children: &children,
            references: Vec::new(),
            reexports: BTreeMap::new(),
        };
        for item in items {
            if !matches!(item, syn::Item::Mod(_)) {
                collector.visit_item(item);
            }
        }
        let (references, reexports) = (collector.references, collector.reexports);
        let module = self.modules.get_mut(&path).unwrap();
        module.references = references;
        module.reexports = reexports;

        for (name, module) in nested {
            let mut child = path.clone();
            child.push(name.clone());
            match &module.content {
                // `mod tests { ... }`: a module inside this file.
                Some((_, items)) => self.add_items(child, file, &folder.join(&name), items),
                None => {
                    let flat = folder.join(format!("{name}.rs"));
                    if flat.is_file() {
                        self.add_file(child, &flat, false);
                    } else {
                        self.add_file(child, &folder.join(&name).join("mod.rs"), true);
                    }
                }
            }
        }
    }

    /// The module a path (absolute, from the crate root) lands in, following re-exports.
    fn resolve(&self, path: &[String]) -> ModPath {
        let mut module: ModPath = Vec::new();
        for (i, segment) in path.iter().enumerate() {
            let Some(current) = self.modules.get(&module) else {
                break;
            };
            if current.children.contains(segment) {
                module.push(segment.clone());
            } else if let Some(target) = current.reexports.get(segment) {
                // A re-export of a re-export ends up where the item is defined.
                let mut target = target.clone();
                target.extend(path[i + 1..].iter().cloned());
                if target.as_slice() == path {
                    break;
                }
                return self.resolve(&target);
            } else {
                break;
            }
        }
        module
    }

    /// Every module's references, resolved: which module uses which.
    fn graph(&self) -> Graph {
        let mut graph = Graph::default();
        for (from, module) in &self.modules {
            for reference in &module.references {
                let to = self.resolve(reference);
                // Below their deepest common module, the two sides are two of its submodules
                // (or one of them is that module itself, its face, which is allowed).
                let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
                if common == from.len() || common == to.len() {
                    continue;
                }
                let owner = from[..common].to_vec();
                let edge = (from[common].clone(), to[common].clone());
                let witness = format!(
                    "{} names {}",
                    module
                        .file
                        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                        .unwrap_or(&module.file)
                        .display(),
                    display_path(reference)
                );
                graph
                    .edges
                    .entry(owner)
                    .or_default()
                    .entry(edge)
                    .or_insert(witness);
            }
        }
        graph
    }
}

fn display_path(path: &[String]) -> String {
    format!("crate::{}", path.join("::"))
}

/// Gathers the crate-relative paths of one module's own items (not its submodules').
struct Collector<'a> {
    here: &'a ModPath,
    children: &'a BTreeSet<String>,
    references: Vec<ModPath>,
    reexports: BTreeMap<String, ModPath>,
}

impl Collector<'_> {
    /// `segments` made absolute if it points into the crate: `crate::`, `super::`, `self::` or
    /// a submodule's name first. Anything else is an outside crate, a local name or the prelude.
    fn absolute(&self, segments: &[String]) -> Option<ModPath> {
        let mut base = self.here.clone();
        let mut rest = segments;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &rest[1..];
            }
            Some("self") => rest = &rest[1..],
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop();
                    rest = &rest[1..];
                }
            }
            Some(first) if self.children.contains(first) => {}
            _ => return None,
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// Expands a `use` tree into full paths, each with the name it brings in.
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree, public: bool) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree, public);
                prefix.pop();
            }
            syn::UseTree::Name(name) => {
                let name = name.ident.to_string();
                if name == "self" {
                    let alias = prefix.last().cloned();
                    self.used(prefix.clone(), alias, public);
                } else {
                    let mut full = prefix.clone();
                    full.push(name.clone());
                    self.used(full, Some(name), public);
                }
            }
            syn::UseTree::Rename(rename) => {
                let mut full = prefix.clone();
                if rename.ident != "self" {
                    full.push(rename.ident.to_string());
                }
                self.used(full, Some(rename.rename.to_string()), public);
            }
            syn::UseTree::Glob(_) => self.used(prefix.clone(), None, false),
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree, public);
                }
            }
        }
    }

    fn used(&mut self, path: Vec<String>, name: Option<String>, public: bool) {
        if let Some(absolute) = self.absolute(&path) {
            if public && let Some(name) = name {
                self.reexports.insert(name, absolute.clone());
            }
            self.references.push(absolute);
        }
    }
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let public = !matches!(item.vis, syn::Visibility::Inherited);
        self.use_tree(&mut Vec::new(), &item.tree, public);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(absolute) = self.absolute(&segments) {
            self.references.push(absolute);
        }
        syn::visit::visit_path(self, path);
    }

    // Inline modules are walked as modules of their own.
    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {}
}

/// For every module, the edges between its direct submodules, each with one reference that
/// makes it.
#[derive(Default)]
struct Graph {
    edges: BTreeMap<ModPath, BTreeMap<(String, String), String>>,
}

#[derive(Debug)]
struct Circle {
    owner: ModPath,
    /// The submodules in order, each using the next and the last using the first, with the
    /// reference that makes each step.
    steps: Vec<(String, String)>,
}

impl Circle {
    fn name(&self, child: &str) -> String {
        self.owner
            .iter()
            .map(String::as_str)
            .chain([child])
            .collect::<Vec<_>>()
            .join("::")
    }

    fn members(&self) -> BTreeSet<String> {
        self.steps
            .iter()
            .map(|(child, _)| self.name(child))
            .collect()
    }
}

impl std::fmt::Display for Circle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.steps.iter().map(|(c, _)| self.name(c)).collect();
        writeln!(f, "  {} -> {}", names.join(" -> "), names[0])?;
        for (_, witness) in &self.steps {
            writeln!(f, "    {witness}")?;
        }
        Ok(())
    }
}

impl Graph {
    /// Whether a submodule `from` of `owner` uses its sibling `to`.
    fn has_edge(&self, owner: &[&str], from: &str, to: &str) -> bool {
        let owner: ModPath = owner.iter().map(|s| s.to_string()).collect();
        self.edges
            .get(&owner)
            .is_some_and(|edges| edges.contains_key(&(from.to_string(), to.to_string())))
    }

    /// The circles among every module's submodules: for each strongly connected group, a
    /// shortest circle through each member not yet on one, so none is hidden behind another.
    fn circles(&self) -> Vec<Circle> {
        let mut circles = Vec::new();
        for (owner, edges) in &self.edges {
            let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (from, to) in edges.keys() {
                next.entry(from).or_default().push(to);
            }
            let mut named: BTreeSet<&str> = BTreeSet::new();
            for &node in next.keys() {
                if named.contains(node) {
                    continue;
                }
                let Some(cycle) = shortest_cycle(&next, node) else {
                    continue;
                };
                named.extend(cycle.iter().copied());
                let steps = cycle
                    .iter()
                    .zip(cycle.iter().cycle().skip(1))
                    .map(|(from, to)| {
                        let witness = &edges[&(from.to_string(), to.to_string())];
                        (from.to_string(), witness.clone())
                    })
                    .collect();
                circles.push(Circle {
                    owner: owner.clone(),
                    steps,
                });
            }
        }
        circles.sort_by_key(|c| (c.members(), c.steps.len()));
        circles
    }
}

/// The shortest path from `start` back to itself (breadth first), as the nodes on it.
fn shortest_cycle<'a>(
    next: &BTreeMap<&'a str, Vec<&'a str>>,
    start: &'a str,
) -> Option<Vec<&'a str>> {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &to in next.get(node).into_iter().flatten() {
            if to == start {
                let mut cycle = vec![node];
                while let Some(&p) = parent.get(cycle.last().unwrap()) {
                    cycle.push(p);
                }
                cycle.reverse();
                return Some(cycle);
            }
            if to != start && !parent.contains_key(to) {
                parent.insert(to, node);
                queue.push_back(to);
            }
        }
    }
    None
}
