//! The OData-style `filter` subset the swagger's list operations take: comparisons
//! `<field> eq <value>` (value a quoted string with `''` for a quote, `null`, `true`, `false` or
//! a number) combined with `and` / `or` (`and` binds tighter; parentheses are not supported),
//! and the `orderby` clause (`field [asc|desc]`).
//!
//! Pure (no I/O, no server types), so the fuzz target `odata` compiles this very file.

/// A parsed filter: alternatives (`or`) of conjunctions (`and`) of `field eq value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    alternatives: Vec<Vec<(String, Option<String>)>>,
}

impl Filter {
    /// Parses `text`; the error names what is wrong.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let tokens = tokenize(text)?;
        let mut alternatives = vec![Vec::new()];
        let mut i = 0;
        loop {
            let field = match tokens.get(i) {
                Some(Token::Word(word)) => word.clone(),
                _ => return Err(format!("expected a field name in filter {text:?}")),
            };
            match tokens.get(i + 1) {
                Some(Token::Word(op)) if op.eq_ignore_ascii_case("eq") => {}
                _ => return Err(format!("expected `eq` after {field:?} in filter {text:?} (only eq is supported)")),
            }
            let value = match tokens.get(i + 2) {
                Some(Token::Text(value)) => Some(value.clone()),
                Some(Token::Word(word)) if word.eq_ignore_ascii_case("null") => None,
                Some(Token::Word(word)) => Some(word.to_ascii_lowercase()),
                None => return Err(format!("expected a value after `{field} eq` in filter {text:?}")),
            };
            if let Some(last) = alternatives.last_mut() {
                last.push((field, value));
            }
            match tokens.get(i + 3) {
                None => break,
                Some(Token::Word(word)) if word.eq_ignore_ascii_case("and") => {}
                Some(Token::Word(word)) if word.eq_ignore_ascii_case("or") => alternatives.push(Vec::new()),
                Some(_) => return Err(format!("expected `and` or `or` in filter {text:?}")),
            }
            i += 4;
        }
        Ok(Self { alternatives })
    }

    /// The fields the filter names.
    pub(crate) fn fields(&self) -> impl Iterator<Item = &str> {
        self.alternatives.iter().flatten().map(|(field, _)| field.as_str())
    }

    /// Whether an item matches, `value_of(field)` giving the item's value of a field (`None`
    /// when it has none). Strings compare without case.
    pub(crate) fn matches(&self, value_of: impl Fn(&str) -> Option<String>) -> bool {
        self.alternatives.iter().any(|all| {
            all.iter().all(|(field, wanted)| match (value_of(field), wanted) {
                (None, None) => true,
                (Some(actual), Some(wanted)) => actual.eq_ignore_ascii_case(wanted),
                _ => false,
            })
        })
    }

    /// Checks that every field is one of `known` (without case).
    pub(crate) fn only(&self, known: &[&str]) -> Result<(), String> {
        for field in self.fields() {
            let ok = known.iter().any(|k| {
                k.eq_ignore_ascii_case(field)
                    || (k.ends_with('/')
                        && field.len() > k.len()
                        && field.get(..k.len()).is_some_and(|prefix| prefix.eq_ignore_ascii_case(k)))
            });
            if !ok {
                return Err(format!("cannot filter on {field:?}; filterable: {}", known.join(", ")));
            }
        }
        Ok(())
    }
}

/// A parsed `orderby`: which of the allowed fields, and the direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OrderBy {
    /// Index into the `fields` given to [`OrderBy::parse`].
    pub(crate) field: usize,
    /// `desc`.
    pub(crate) descending: bool,
}

impl OrderBy {
    /// Parses `field [asc|desc]`, `field` one of `fields` (without case); the error names what is
    /// wrong.
    pub(crate) fn parse(text: &str, fields: &[&str]) -> Result<Self, String> {
        let mut parts = text.split_whitespace();
        let name = parts.next().unwrap_or_default();
        let descending = match parts.next() {
            None => false,
            Some(direction) if direction.eq_ignore_ascii_case("asc") => false,
            Some(direction) if direction.eq_ignore_ascii_case("desc") => true,
            Some(other) => return Err(format!("orderby direction {other:?} is not asc or desc")),
        };
        if let Some(extra) = parts.next() {
            return Err(format!("unexpected {extra:?} in orderby {text:?} (one field and a direction)"));
        }
        match fields.iter().position(|field| field.eq_ignore_ascii_case(name)) {
            Some(field) => Ok(Self { field, descending }),
            None => Err(format!("cannot order by {name:?}; use one of {}", fields.join(", "))),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || c == '(' || c == ')' {
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        value.push('\'');
                    }
                    Some('\'') => break,
                    Some(other) => value.push(other),
                    None => return Err(format!("unterminated string in filter {text:?}")),
                }
            }
            tokens.push(Token::Text(value));
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '\'' || c == '(' || c == ')' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            tokens.push(Token::Word(word));
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_conjunctions_and_alternatives() {
        let filter = Filter::parse("status eq 'NotStarted' or status eq 'Running'").unwrap();
        assert!(filter.matches(|_| Some("running".into())));
        assert!(!filter.matches(|_| Some("Succeeded".into())));
        let filter = Filter::parse("GroupId eq 'g1' and DeploymentStatus eq null").unwrap();
        assert!(filter.matches(|f| if f == "GroupId" { Some("g1".into()) } else { None }));
        assert!(!filter.matches(|f| if f == "GroupId" { Some("g1".into()) } else { Some("Failed".into()) }));
        let quoted = Filter::parse("friendlyName eq 'O''Brien'").unwrap();
        assert!(quoted.matches(|_| Some("o'brien".into())));
        assert!(Filter::parse("isDeployable eq false").unwrap().matches(|_| Some("false".into())));
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        assert!(Filter::parse("status ne 'x'").is_err());
        assert!(Filter::parse("status eq").is_err());
        assert!(Filter::parse("status eq 'x").is_err());
        assert!(Filter::parse("").is_err());
        let filter = Filter::parse("compatProperties/manufacturer eq 'c'").unwrap();
        assert!(filter.only(&["compatProperties/"]).is_ok());
        assert!(filter.only(&["groupId"]).is_err());
    }

    /// Issue 11: a field whose name has a multi-byte character where a known prefix ends
    /// (`compatPropertiesé`) panicked on a byte slice inside the `é`.
    #[test]
    fn multibyte_field_names_are_refused_not_sliced() {
        let filter = Filter::parse("compatProperties\u{e9}x eq 'a'").unwrap();
        assert!(filter.only(&["compatProperties/"]).is_err());
        let filter = Filter::parse("\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9} eq 'a'").unwrap();
        assert!(filter.only(&["groupId", "compatProperties/"]).is_err());
    }

    #[test]
    fn orderby_names_a_field_and_a_direction() {
        let fields = ["startDateTime", "groupId"];
        assert_eq!(OrderBy::parse("groupid desc", &fields), Ok(OrderBy { field: 1, descending: true }));
        assert_eq!(OrderBy::parse(" startDateTime ", &fields), Ok(OrderBy { field: 0, descending: false }));
        assert!(OrderBy::parse("groupId sideways", &fields).is_err());
        assert!(OrderBy::parse("groupId asc extra", &fields).is_err());
        assert!(OrderBy::parse("", &fields).is_err());
        assert!(OrderBy::parse("\u{e9}", &fields).is_err());
    }
}
