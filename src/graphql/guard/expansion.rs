//! The size of a document once its fragments are expanded, found without expanding them.
//!
//! async-graphql walks every operation with each fragment spread replaced by the fragment's body,
//! and it does so several times with no memo: its recursion-depth and directive checks while
//! parsing, its complexity, depth and cache-control visitors while validating, then execution. A
//! "fragment bomb" (`fragment F1 on Query { ...F0 ...F0 }`, `fragment F2 on Query { ...F1 ...F1 }`,
//! and so on) doubles that work at each level: 24 levels, a 1 KB request, meant 2^24 visits and a
//! 13 s stall; on `Subscription`, one validation error per visit and 12.6 GB. Here each fragment
//! is measured once and its measure reused wherever it is spread, so the walk is linear in the
//! text, however large the expansion would be.

use std::collections::HashMap;

use async_graphql::parser::types::{Directive, ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Pos, Positioned};
use async_graphql_value::Value;

/// What the expanded document holds. Counts saturate rather than overflow (64 levels of
/// doubling exceed `u64`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Size {
    /// Fields, each time expansion repeats them; `__typename`, introspection fields and aliases
    /// count like any other.
    pub fields: u64,
    /// Everything async-graphql's walkers visit: fields, fragment spreads, inline fragments,
    /// argument values (each list item and object field too) and directives.
    pub nodes: u64,
    /// How many selection sets nest below this one (fragment bodies and inline fragments count
    /// one level each, as async-graphql's recursion-depth check counts them).
    height: usize,
}

impl Size {
    fn nest(&mut self, inner: Size) {
        self.fields = self.fields.saturating_add(inner.fields);
        self.nodes = self.nodes.saturating_add(inner.nodes);
        self.height = self.height.max(inner.height + 1);
    }
}

/// Why a document cannot be measured (and must not be executed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A fragment spreads itself, directly or through others: its expansion has no end.
    Cycle { fragment: String, pos: Pos },
    /// Selection sets nest deeper than `limit`, fragments expanded.
    TooDeep { limit: usize, pos: Pos },
    /// More than `limit` directives on one selection.
    TooManyDirectives { limit: usize, count: usize, pos: Pos },
}

#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Deepest nesting of selection sets, counted as async-graphql's `limit_recursive_depth`.
    pub max_depth: usize,
    /// Most directives on one field, fragment spread or inline fragment.
    pub max_directives: usize,
}

/// The expanded size of every operation in `doc` together: async-graphql checks and validates
/// all of them, not only the one a request selects.
pub fn measure(doc: &ExecutableDocument, rules: Rules) -> Result<Size, Refusal> {
    let mut walker = Walker { doc, rules, fragments: HashMap::new() };
    let mut total = Size::default();
    for (_, operation) in doc.operations.iter() {
        let directives = walker.directives(&operation.node.directives, operation.pos)?;
        let body = walker.selection_set(&operation.node.selection_set, 0)?;
        total.fields = total.fields.saturating_add(body.fields);
        total.nodes = total.nodes.saturating_add(body.nodes).saturating_add(directives);
        total.height = total.height.max(body.height);
    }
    Ok(total)
}

enum Memo {
    /// On the walk's current path: meeting it again is a cycle.
    Measuring,
    Measured(Size),
}

struct Walker<'d> {
    doc: &'d ExecutableDocument,
    rules: Rules,
    fragments: HashMap<&'d str, Memo>,
}

impl<'d> Walker<'d> {
    /// `depth` is this set's own nesting level (an operation's body is at 0). The walk refuses
    /// as soon as it passes `max_depth`, which also bounds this function's own recursion.
    fn selection_set(&mut self, set: &'d Positioned<SelectionSet>, depth: usize) -> Result<Size, Refusal> {
        if depth > self.rules.max_depth {
            return Err(Refusal::TooDeep { limit: self.rules.max_depth, pos: set.pos });
        }
        let mut size = Size::default();
        for selection in &set.node.items {
            let directives = self.directives(selection.node.directives(), selection.pos)?;
            size.nodes = size.nodes.saturating_add(1).saturating_add(directives);
            match &selection.node {
                Selection::Field(field) => {
                    size.fields = size.fields.saturating_add(1);
                    let arguments: u64 = field.node.arguments.iter().map(|(_, value)| value_nodes(&value.node)).sum();
                    size.nodes = size.nodes.saturating_add(arguments);
                    if !field.node.selection_set.node.items.is_empty() {
                        size.nest(self.selection_set(&field.node.selection_set, depth + 1)?);
                    }
                }
                Selection::FragmentSpread(spread) => {
                    if let Some(body) = self.fragment(&spread.node.fragment_name.node, spread.pos, depth)? {
                        size.nest(body);
                    }
                }
                Selection::InlineFragment(inline) => {
                    size.nest(self.selection_set(&inline.node.selection_set, depth + 1)?);
                }
            }
        }
        Ok(size)
    }

    /// The size of fragment `name`'s body, spread from a selection set at `depth`; `None` for an
    /// unknown fragment (validation reports it).
    fn fragment(&mut self, name: &'d str, spread_at: Pos, depth: usize) -> Result<Option<Size>, Refusal> {
        match self.fragments.get(name) {
            Some(Memo::Measured(size)) => {
                if depth + 1 + size.height > self.rules.max_depth {
                    return Err(Refusal::TooDeep { limit: self.rules.max_depth, pos: spread_at });
                }
                Ok(Some(*size))
            }
            Some(Memo::Measuring) => Err(Refusal::Cycle { fragment: name.to_owned(), pos: spread_at }),
            None => {
                let Some((name, definition)) = self.doc.fragments.get_key_value(name) else { return Ok(None) };
                self.fragments.insert(name.as_str(), Memo::Measuring);
                let size = self.selection_set(&definition.node.selection_set, depth + 1)?;
                self.fragments.insert(name.as_str(), Memo::Measured(size));
                Ok(Some(size))
            }
        }
    }

    /// The nodes `directives` add (each directive and its argument values).
    fn directives(&self, directives: &'d [Positioned<Directive>], at: Pos) -> Result<u64, Refusal> {
        if directives.len() > self.rules.max_directives {
            return Err(Refusal::TooManyDirectives {
                limit: self.rules.max_directives,
                count: directives.len(),
                pos: at,
            });
        }
        Ok(directives
            .iter()
            .map(|d| d.node.arguments.iter().map(|(_, value)| value_nodes(&value.node)).sum::<u64>() + 1)
            .sum())
    }
}

/// A value and everything inside it. Recursion is bounded by the text check on bracket nesting,
/// which runs before parsing.
fn value_nodes(value: &Value) -> u64 {
    1 + match value {
        Value::List(items) => items.iter().map(value_nodes).sum(),
        Value::Object(fields) => fields.values().map(value_nodes).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;

    use super::*;

    const RULES: Rules = Rules { max_depth: 32, max_directives: 50 };

    fn size(query: &str) -> Result<Size, Refusal> {
        measure(&parse_query(query).expect("the test query parses"), RULES)
    }

    fn bomb(levels: usize, root: &str) -> String {
        let mut text = format!("fragment F0 on {root} {{ __typename }}");
        for i in 1..=levels {
            text += &format!(" fragment F{i} on {root} {{ ...F{p} ...F{p} }}", p = i - 1);
        }
        let keyword = if root == "Subscription" { "subscription " } else { "" };
        text + &format!(" {keyword}{{ ...F{levels} }}")
    }

    #[test]
    fn every_field_counts_typename_and_aliases_too() {
        let s = size("{ __typename a: products { id sku } b: products { id } }").unwrap();
        assert_eq!(s.fields, 6);
        assert_eq!(s.nodes, 6);
        let s = size("{ products(first: 2) @include(if: true) { id } }").unwrap();
        assert_eq!((s.fields, s.nodes), (2, 5), "a field, its argument, a directive and its argument, a field");
        let s = size("{ a(o: {x: [1, 2], y: 3}) }").unwrap();
        assert_eq!(s.nodes, 1 + 5, "the object, its two fields and the list's two items");
    }

    #[test]
    fn fragments_count_once_per_spread() {
        let q =
            "{ products { ...P } product(id: 1) { ...P ... on Product { name } } } fragment P on Product { id sku }";
        let s = size(q).unwrap();
        assert_eq!(s.fields, 2 + 2 + 2 + 1);
        // two fields, one argument, two spreads, one inline fragment, and the fragment twice
        assert_eq!(s.nodes, 2 + 1 + 2 + 1 + 2 * 2 + 1);
    }

    #[test]
    fn a_fragment_bomb_is_measured_without_being_expanded() {
        let s = size(&bomb(24, "Query")).unwrap();
        assert_eq!(s.fields, 1 << 24);
        assert_eq!(s.nodes, (1 << 24) + (1 << 25) - 1, "the fields and every spread");
        assert!(matches!(size(&bomb(64, "Query")), Err(Refusal::TooDeep { .. })), "64 levels nest too deep");
        let wide = (1..=20).fold("fragment F0 on Query { __typename }".to_owned(), |q, i| {
            q + &format!(" fragment F{i} on Query {{ {} }}", format!("...F{} ", i - 1).repeat(16))
        }) + " { ...F20 }";
        assert_eq!(size(&wide).unwrap().fields, u64::MAX, "16^20 saturates");
    }

    #[test]
    fn every_operation_counts() {
        assert_eq!(size("query A { __typename } query B { me { userId } }").unwrap().fields, 3);
    }

    #[test]
    fn cycles_are_refused() {
        let q = "{ ...A } fragment A on Query { ...B } fragment B on Query { me { ...A } }";
        assert!(matches!(size(q), Err(Refusal::Cycle { .. })), "{:?}", size(q));
        assert!(matches!(size("{ ...A } fragment A on Query { ...A }"), Err(Refusal::Cycle { .. })));
    }

    #[test]
    fn depth_counts_fragment_bodies_and_holds_wherever_a_fragment_is_spread() {
        let chain = |n: usize| {
            let mut q = "{ ...F1 }".to_owned();
            for i in 1..n {
                q += &format!(" fragment F{i} on Query {{ ...F{} }}", i + 1);
            }
            q + &format!(" fragment F{n} on Query {{ __typename }}")
        };
        assert!(size(&chain(32)).is_ok());
        assert!(matches!(size(&chain(33)), Err(Refusal::TooDeep { .. })));
        // Measured shallow first, then spread deeper: the memo still knows how deep it goes.
        let deep_spread = format!("{{ ...F1 {} ...F1 {} }} {}", "me {".repeat(2), "}".repeat(2), &chain(31)[10..]);
        assert!(matches!(size(&deep_spread), Err(Refusal::TooDeep { .. })), "{deep_spread}");
        assert!(size(&format!("{{ ...F1 {} ...F1 {} }} {}", "me {", "}", &chain(31)[10..])).is_ok());
        let inline = format!("{{ {} __typename {} }}", "... { ".repeat(33), "}".repeat(33));
        assert!(matches!(size(&inline), Err(Refusal::TooDeep { .. })));
    }

    #[test]
    fn a_directive_storm_on_one_selection_is_refused() {
        let storm = format!("{{ ...F {} }} fragment F on Query {{ __typename }}", "@include(if: true) ".repeat(51));
        assert!(matches!(size(&storm), Err(Refusal::TooManyDirectives { count: 51, .. })));
        let fifty = format!("{{ __typename {} }}", "@include(if: true) ".repeat(50));
        assert_eq!(size(&fifty).unwrap().nodes, 1 + 50 * 2);
    }

    #[test]
    fn the_full_introspection_query_selects_230_fields() {
        let s = size(crate::graphql::guard::tests::FULL_INTROSPECTION).unwrap();
        assert_eq!((s.fields, s.nodes, s.height), (230, 245, 17));
    }
}
