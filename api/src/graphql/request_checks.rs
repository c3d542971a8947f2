//! Checks on a parsed request before it is validated or run, each bounded by the
//! request's size, so no input from outside can cost more than that:
//!
//! - **Storable text.** A NUL in any string (argument, variable, object key) is
//!   refused with `BAD_USER_INPUT`: PostgreSQL's `text` and `jsonb` cannot hold it,
//!   and a value the log holds sealed but a read model cannot store would stop that
//!   read model for everyone. (Lone surrogates cannot reach here: the GraphQL parser
//!   and the JSON decoder refuse them.)
//! - **Expanded size.** Fields and aliases are counted with every fragment spread
//!   expanded, each fragment counted once (memoized), so fragments that spread each
//!   other twice per level are refused before the validator would walk their
//!   exponential expansion.
//! - **Credential checks.** At most [`MAX_CREDENTIAL_CHECKS`] password or token
//!   operations per request, so one request cannot run an unbounded number of
//!   argon2 checks.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{
    Directive, ExecutableDocument, FragmentDefinition, OperationType, Selection, SelectionSet,
};
use async_graphql::{Name, Positioned, ServerError, ServerResult, Variables};
use async_graphql_value::{ConstValue, Value};

use crate::error::ErrorCode;

/// Root fields that check a password or issue a credential.
const CREDENTIAL_OPERATIONS: &[&str] = &["login", "changePassword", "acceptInvitation", "createApiToken"];
/// Most credential operations one request may run.
pub const MAX_CREDENTIAL_CHECKS: u64 = 5;

/// The bounds a request's document must stay within.
#[derive(Debug, Clone, Copy)]
pub struct RequestChecks {
    /// Most fields, fragments expanded.
    pub max_fields: u64,
    /// Most aliased fields, fragments expanded.
    pub max_aliases: u64,
}

impl ExtensionFactory for RequestChecks {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(*self)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for RequestChecks {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if variables.iter().any(|(name, value)| has_nul(name) || const_has_nul(value)) {
            return Err(refused(NUL_REFUSED));
        }
        let document = next.run(ctx, query, variables).await?;
        self.check(&document)?;
        Ok(document)
    }
}

const NUL_REFUSED: &str = "text must not contain NUL characters (U+0000)";

fn refused(message: impl Into<String>) -> ServerError {
    let mut error = ServerError::new(message, None);
    error.extensions.get_or_insert_with(Default::default).set("code", ErrorCode::BadUserInput.as_str());
    error
}

/// What a selection set expands to.
#[derive(Debug, Clone, Copy, Default)]
struct Expanded {
    fields: u64,
    aliases: u64,
    /// Credential operations among the root fields (meaningful at the root only).
    credential_checks: u64,
}

impl Expanded {
    fn add(&mut self, other: Expanded) {
        self.fields = self.fields.saturating_add(other.fields);
        self.aliases = self.aliases.saturating_add(other.aliases);
        self.credential_checks = self.credential_checks.saturating_add(other.credential_checks);
    }
}

struct Expansion<'d> {
    fragments: &'d HashMap<Name, Positioned<FragmentDefinition>>,
    /// Each fragment's expansion (spread at the root or not), computed once; `None`
    /// while being computed (a cycle, which the validator refuses: counted as empty).
    memo: HashMap<(&'d str, bool), Option<Expanded>>,
    /// Selections visited: bounded by the document's size, not its expansion.
    visited: u64,
}

impl<'d> Expansion<'d> {
    fn selection_set(&mut self, set: &'d SelectionSet, root: bool) -> Expanded {
        let mut total = Expanded::default();
        for item in &set.items {
            self.visited += 1;
            match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let mut one = Expanded {
                        fields: 1,
                        aliases: u64::from(field.alias.is_some()),
                        credential_checks: u64::from(root && CREDENTIAL_OPERATIONS.contains(&field.name.node.as_str())),
                    };
                    one.add(self.selection_set(&field.selection_set.node, false));
                    total.add(one);
                }
                Selection::FragmentSpread(spread) => total.add(self.fragment(&spread.node.fragment_name.node, root)),
                Selection::InlineFragment(inline) => {
                    total.add(self.selection_set(&inline.node.selection_set.node, root))
                }
            }
        }
        total
    }

    fn fragment(&mut self, name: &'d Name, root: bool) -> Expanded {
        // Spread at the root, a fragment's own root fields may be credential
        // operations; elsewhere they cannot be: memoized apart.
        match self.memo.get(&(name.as_str(), root)) {
            Some(Some(done)) => return *done,
            Some(None) => return Expanded::default(),
            None => {}
        }
        let Some(fragment) = self.fragments.get(name) else { return Expanded::default() };
        self.memo.insert((name.as_str(), root), None);
        let expanded = self.selection_set(&fragment.node.selection_set.node, root);
        self.memo.insert((name.as_str(), root), Some(expanded));
        expanded
    }
}

impl RequestChecks {
    fn check(&self, document: &ExecutableDocument) -> ServerResult<()> {
        if document_has_nul(document) {
            return Err(refused(NUL_REFUSED));
        }
        let total = expand(document).0;
        if total.fields > self.max_fields {
            return Err(refused(format!(
                "the query selects {} fields with its fragments expanded; at most {} are allowed",
                total.fields, self.max_fields
            )));
        }
        if total.aliases > self.max_aliases {
            return Err(refused(format!(
                "the query uses {} aliases with its fragments expanded; at most {} are allowed",
                total.aliases, self.max_aliases
            )));
        }
        if total.credential_checks > MAX_CREDENTIAL_CHECKS {
            return Err(refused(format!(
                "at most {MAX_CREDENTIAL_CHECKS} password or token operations are allowed in one request"
            )));
        }
        Ok(())
    }
}

/// Every string the document holds, in one walk of it as written (not expanded).
fn document_has_nul(document: &ExecutableDocument) -> bool {
    fn directives(list: &[Positioned<Directive>]) -> bool {
        list.iter().any(|d| d.node.arguments.iter().any(|(_, v)| value_has_nul(&v.node)))
    }
    fn set(selections: &SelectionSet) -> bool {
        selections.items.iter().any(|item| match &item.node {
            Selection::Field(field) => {
                field.node.arguments.iter().any(|(_, v)| value_has_nul(&v.node))
                    || directives(&field.node.directives)
                    || set(&field.node.selection_set.node)
            }
            Selection::FragmentSpread(spread) => directives(&spread.node.directives),
            Selection::InlineFragment(inline) => {
                directives(&inline.node.directives) || set(&inline.node.selection_set.node)
            }
        })
    }
    document.operations.iter().any(|(_, operation)| {
        let operation = &operation.node;
        operation
            .variable_definitions
            .iter()
            .any(|v| v.node.default_value.as_ref().is_some_and(|d| const_has_nul(&d.node)))
            || directives(&operation.directives)
            || set(&operation.selection_set.node)
    }) || document.fragments.values().any(|f| directives(&f.node.directives) || set(&f.node.selection_set.node))
}

/// The document's fields, aliases and root credential operations with fragments
/// expanded, and how many selections were visited to count them.
fn expand(document: &ExecutableDocument) -> (Expanded, u64) {
    let mut expansion = Expansion { fragments: &document.fragments, memo: HashMap::new(), visited: 0 };
    let mut total = Expanded::default();
    for (_, operation) in document.operations.iter() {
        let mut expanded = expansion.selection_set(&operation.node.selection_set.node, true);
        if operation.node.ty != OperationType::Mutation {
            expanded.credential_checks = 0;
        }
        total.add(expanded);
    }
    (total, expansion.visited)
}

fn has_nul(text: &str) -> bool {
    text.contains('\0')
}

fn value_has_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => has_nul(text),
        Value::List(items) => items.iter().any(value_has_nul),
        Value::Object(fields) => fields.iter().any(|(key, value)| has_nul(key) || value_has_nul(value)),
        _ => false,
    }
}

fn const_has_nul(value: &ConstValue) -> bool {
    match value {
        ConstValue::String(text) => has_nul(text),
        ConstValue::List(items) => items.iter().any(const_has_nul),
        ConstValue::Object(fields) => fields.iter().any(|(key, value)| has_nul(key) || const_has_nul(value)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;

    use super::*;

    const CHECKS: RequestChecks = RequestChecks { max_fields: 2_000, max_aliases: 50 };

    fn verdict(query: &str) -> Result<(), String> {
        CHECKS.check(&parse_query(query).expect("the test query parses")).map_err(|e| e.message)
    }

    /// Fragments that each spread the previous one twice: 2^levels fields expanded.
    fn doubling(levels: usize) -> String {
        let mut query = String::from("fragment F0 on QueryRoot { __typename }\n");
        for n in 1..=levels {
            query.push_str(&format!("fragment F{n} on QueryRoot {{ ...F{} a{n}: __typename ...F{} }}\n", n - 1, n - 1));
        }
        query.push_str(&format!("{{ ...F{levels} }}"));
        query
    }

    #[test]
    fn doubling_fragments_are_counted_expanded_without_being_expanded() {
        assert!(verdict(&doubling(5)).is_ok(), "63 fields and 31 aliases fit");
        let refused = verdict(&doubling(60)).unwrap_err();
        assert!(refused.contains("fields with its fragments expanded"), "{refused}");
        let (expanded, visited) = expand(&parse_query(doubling(60)).unwrap());
        assert_eq!(expanded.fields, (1u64 << 61) - 1, "2^61 - 1 fields once expanded");
        assert!(visited < 200, "each fragment is walked once (at the root and below): {visited} selections");
    }

    #[test]
    fn aliases_are_capped_with_fragments_expanded() {
        let fields: String = (0..51).map(|n| format!("a{n}: __typename ")).collect();
        assert!(verdict(&format!("{{ {fields} }}")).unwrap_err().contains("51 aliases"));
        let half: String = (0..26).map(|n| format!("a{n}: __typename ")).collect();
        let twice = format!("fragment H on QueryRoot {{ {half} }} {{ ...H x: me {{ ...on User {{ id }} }} ...H }}");
        assert!(verdict(&twice).unwrap_err().contains("53 aliases"));
    }

    #[test]
    fn a_nul_anywhere_in_the_document_is_refused() {
        for query in [
            r#"mutation { login(input: {email: "a\u0000b", password: "x"}) { token } }"#,
            r#"query($f: String = "\u0000") { me { id } }"#,
            r#"fragment N on QueryRoot { conversations(filter: {label: "x\u0000"}) { totalCount } } { me { id } }"#,
            r#"{ conversations(filter: {label: ["ok", "\u0000"]}) { totalCount } }"#,
        ] {
            assert_eq!(verdict(query), Err(NUL_REFUSED.to_string()), "{query}");
        }
        assert!(
            verdict(r#"{ conversations(filter: {label: "a\\u0000b"}) { totalCount } }"#).is_ok(),
            "an escaped backslash is text"
        );
    }

    #[test]
    fn at_most_five_credential_operations_run_in_one_request() {
        let logins = |n: usize| -> String {
            let fields: String = (0..n)
                .map(|i| format!("l{i}: login(input: {{email: \"a{i}@x.test\", password: \"p\"}}) {{ token }} "))
                .collect();
            format!("mutation {{ {fields} }}")
        };
        assert!(verdict(&logins(5)).is_ok());
        assert!(verdict(&logins(6)).unwrap_err().contains("at most 5"));
        let spread = "fragment L on MutationRoot { a: login(input: {email: \"a@x.test\", password: \"p\"}) { token } \
                      b: createApiToken(input: {name: \"t\"}) { token } } mutation { ...L ...L ...L }";
        assert!(verdict(spread).unwrap_err().contains("at most 5"), "spread fragments count each time");
    }
}
