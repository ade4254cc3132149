//! Subscription expressions (`TagA || TagB`) as consumers send them in pull requests and
//! heartbeats; the broker's pull path and the client's tag filter both read them.

/// The tags of a subscription expression (`TagA || TagB`); `None` for "every message" (`*` or
/// empty). The broker filters by their hash codes, clients by the exact tags.
pub fn expression_tags(expression: &str) -> Option<Vec<String>> {
    let expression = expression.trim();
    if expression.is_empty() || expression == "*" {
        return None;
    }
    Some(
        expression
            .split("||")
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
    )
}
