//! Naming functions: the forms a client may use for one (`name`, `name:qualifier`, a partial ARN,
//! a full ARN) and the ARNs Lamina hands back.

use std::sync::LazyLock;

use regex_lite::Regex;

use crate::{Error, Result};

/// The version every function has: its mutable, unpublished state.
pub const LATEST: &str = "$LATEST";

/// Where the platform says it runs; every ARN it makes carries these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub region: String,
    pub account_id: String,
}

impl Account {
    pub fn function_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:lambda:{}:{}:function:{name}",
            self.region, self.account_id
        )
    }

    pub fn qualified_arn(&self, name: &str, qualifier: &str) -> String {
        format!("{}:{qualifier}", self.function_arn(name))
    }
}

/// The model's shapes for a function's name: each operation takes one, and Lambda quotes its
/// pattern when a name does not match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameShape {
    /// `FunctionName`: CreateFunction, the updates, PublishVersion, aliases, concurrency and
    /// provisioned concurrency.
    Function,
    /// `NamespacedFunctionName`: GetFunction(Configuration), DeleteFunction, Invoke, policies,
    /// event invoke configurations, ListVersionsByFunction.
    Namespaced,
    /// `FunctionUrlFunctionName`: the function URL configurations; a qualifier is an alias.
    Url,
    /// `UnqualifiedFunctionName`: the recursion configuration.
    Unqualified,
}

/// `Qualifier`, the query parameter of provisioned concurrency.
const PROVISIONED_QUALIFIER: &str = "(|[a-zA-Z0-9$_-]+)";
/// `NumericLatestPublishedOrAliasQualifier`, the query parameter of the other operations.
const QUALIFIER: &str = r"\$(LATEST(\.PUBLISHED)?)|[a-zA-Z0-9-_$]+";
/// `FunctionUrlQualifier`.
const URL_QUALIFIER: &str = r"((?!^\d+$)^[0-9a-zA-Z-_]+$)";

impl NameShape {
    /// The model's pattern, as Lambda quotes it.
    pub fn pattern(self) -> &'static str {
        match self {
            Self::Function => {
                r"(arn:(aws[a-zA-Z-]*)?:lambda:)?((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?([a-zA-Z0-9-_]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?"
            }
            Self::Namespaced => {
                r"(arn:(aws[a-zA-Z-]*)?:lambda:)?((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?([a-zA-Z0-9-_\.]+)(:(\$LATEST(\.PUBLISHED)?|[a-zA-Z0-9-_]+))?"
            }
            Self::Url => {
                r"(arn:(aws[a-zA-Z-]*)?:lambda:)?((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?([a-zA-Z0-9-_]{1,64})(:((?!\d+$)[0-9a-zA-Z-_]+))?"
            }
            Self::Unqualified => {
                r"(arn:(aws[a-zA-Z-]*)?:lambda:)?((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?([a-zA-Z0-9-_]+)"
            }
        }
    }

    fn max_length(self) -> usize {
        match self {
            Self::Namespaced => 256,
            _ => 140,
        }
    }

    /// The same pattern in a form `regex_lite` compiles (it has no look-ahead), anchored, with
    /// named groups. The URL shape's "not all digits" rule is checked after matching.
    fn matcher(self) -> &'static Regex {
        static MATCHERS: LazyLock<[Regex; 4]> = LazyLock::new(|| {
            let build = |name: &str, qualifier: &str| {
                Regex::new(&format!(
                    r"^(arn:(aws[a-zA-Z-]*)?:lambda:)?((?<region>(eusc-)?[a-z]{{2}}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{{1}}):)?((?<account>\d{{12}}):)?(function:)?(?<name>{name}){qualifier}$"
                ))
                .expect("a valid pattern")
            };
            [
                build(
                    r"[a-zA-Z0-9-_]+",
                    r"(:(?<qualifier>\$LATEST|[a-zA-Z0-9-_]+))?",
                ),
                build(
                    r"[a-zA-Z0-9-_\.]+",
                    r"(:(?<qualifier>\$LATEST(\.PUBLISHED)?|[a-zA-Z0-9-_]+))?",
                ),
                build(r"[a-zA-Z0-9-_]{1,64}", r"(:(?<qualifier>[0-9a-zA-Z-_]+))?"),
                build(r"[a-zA-Z0-9-_]+", ""),
            ]
        });
        &MATCHERS[self as usize]
    }

    /// Checks a `Qualifier` query parameter against the shape the operation takes.
    fn check_qualifier(self, qualifier: &str) -> Result<()> {
        let alias_chars = |q: &str| {
            q.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let (valid, pattern) = match self {
            Self::Function => (
                qualifier
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"$_-".contains(&b)),
                PROVISIONED_QUALIFIER,
            ),
            Self::Url => (
                alias_chars(qualifier) && !qualifier.bytes().all(|b| b.is_ascii_digit()),
                URL_QUALIFIER,
            ),
            Self::Namespaced | Self::Unqualified => (
                qualifier == LATEST
                    || qualifier == LATEST_PUBLISHED
                    || qualifier
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_$".contains(&b)),
                QUALIFIER,
            ),
        };
        if qualifier.len() > 128 {
            return Err(too_long("qualifier", qualifier, 128));
        }
        if !valid {
            return Err(bad_pattern("qualifier", qualifier, pattern));
        }
        Ok(())
    }
}

/// The newest published version, a qualifier of the current model (Lamina resolves none yet).
pub const LATEST_PUBLISHED: &str = "$LATEST.PUBLISHED";

/// A function as a request names it, before the qualifier is resolved to a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: String,
    pub qualifier: Option<String>,
}

impl FunctionRef {
    /// Parses a name as the `FunctionName` shape takes it; see [`FunctionRef::parse_as`].
    pub fn parse(input: &str, account: &Account) -> Result<Self> {
        Self::parse_as(input, NameShape::Function, account)
    }

    /// Parses any of the forms Lambda accepts (name, `name:qualifier`, partial ARN, full ARN)
    /// against the model's pattern for `shape`. An ARN of another account is not found (this
    /// platform holds one account); one of another region is not found either, with Lambda's
    /// words, since every ARN Lamina hands out names its own region.
    pub fn parse_as(input: &str, shape: NameShape, account: &Account) -> Result<Self> {
        if input.chars().count() > shape.max_length() {
            return Err(too_long("functionName", input, shape.max_length()));
        }
        let captures = shape
            .matcher()
            .captures(input)
            .filter(|c| {
                shape != NameShape::Url
                    || c.name("qualifier")
                        .is_none_or(|q| !q.as_str().bytes().all(|b| b.is_ascii_digit()))
            })
            .ok_or_else(|| bad_pattern("functionName", input, shape.pattern()))?;
        if let Some(region) = captures.name("region")
            && region.as_str() != account.region
        {
            return Err(Error::not_found(format!(
                "Functions from '{}' are not reachable in this region ('{}')",
                region.as_str(),
                account.region
            )));
        }
        if let Some(owner) = captures.name("account")
            && owner.as_str() != account.account_id
        {
            return Err(Error::not_found(format!(
                "Function not found: {input} (this platform's account is {})",
                account.account_id
            )));
        }
        Ok(Self {
            name: captures["name"].to_owned(),
            qualifier: captures.name("qualifier").map(|q| q.as_str().to_owned()),
        })
    }

    /// Parses the path's function name (`NamespacedFunctionName`) and merges the `Qualifier`
    /// query parameter into it; see [`FunctionRef::parse_with_qualifier_as`].
    pub fn parse_with_qualifier(
        input: &str,
        qualifier: Option<&str>,
        account: &Account,
    ) -> Result<Self> {
        Self::parse_with_qualifier_as(input, NameShape::Namespaced, qualifier, account)
    }

    /// Parses the path's function name and merges the `Qualifier` query parameter into it; the
    /// two must agree when both are given. The query parameter is checked against the shape
    /// the operation takes for it: `Qualifier` with [`NameShape::Function`] (provisioned
    /// concurrency), `FunctionUrlQualifier` with [`NameShape::Url`], else
    /// `NumericLatestPublishedOrAliasQualifier`.
    pub fn parse_with_qualifier_as(
        input: &str,
        shape: NameShape,
        qualifier: Option<&str>,
        account: &Account,
    ) -> Result<Self> {
        if let Some(q) = qualifier.filter(|q| !q.is_empty()) {
            shape.check_qualifier(q)?;
        }
        let mut function = Self::parse_as(input, shape, account)?;
        match (function.qualifier.as_deref(), qualifier) {
            (_, None) | (_, Some("")) => {}
            (None, Some(q)) => function.qualifier = Some(q.to_owned()),
            (Some(derived), Some(q)) if derived == q => {}
            (Some(_), Some(_)) => {
                return Err(Error::invalid_parameter(
                    "The derived qualifier from the function name does not match the specified \
                     qualifier.",
                ));
            }
        }
        Ok(function)
    }

    /// Rejects a qualifier where the operation names the whole function.
    pub fn unqualified(self) -> Result<String> {
        match self.qualifier {
            None => Ok(self.name),
            Some(_) => Err(Error::invalid_parameter(
                "This operation takes an unqualified function name; remove the qualifier.",
            )),
        }
    }
}

fn bad_pattern(member: &str, value: &str, pattern: &str) -> Error {
    Error::validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy \
         constraint: Member must satisfy regular expression pattern: {pattern}"
    ))
}

fn too_long(member: &str, value: &str, max: usize) -> Error {
    Error::validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy \
         constraint: Member must have length less than or equal to {max}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn account() -> Account {
        Account {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        }
    }

    fn parse(input: &str) -> Result<(String, Option<String>)> {
        FunctionRef::parse(input, &account()).map(|f| (f.name, f.qualifier))
    }

    #[test]
    fn accepts_every_form_lambda_accepts() {
        let cases = [
            ("fn", ("fn", None)),
            ("fn:live", ("fn", Some("live"))),
            ("fn:$LATEST", ("fn", Some("$LATEST"))),
            ("000000000000:function:fn", ("fn", None)),
            ("000000000000:function:fn:3", ("fn", Some("3"))),
            (
                "arn:aws:lambda:us-east-1:000000000000:function:fn",
                ("fn", None),
            ),
            (
                "arn:aws:lambda:us-east-1:000000000000:function:fn:live",
                ("fn", Some("live")),
            ),
            ("function:fn", ("fn", None)),
        ];
        for (input, (name, qualifier)) in cases {
            assert_eq!(
                parse(input).unwrap(),
                (name.to_owned(), qualifier.map(str::to_owned)),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_malformed_names() {
        for input in [
            "",
            "a b",
            "fn:",
            "arn:aws:s3:::bucket",
            "a:b:c",
            "function:fn:$LATEST:extra",
            "arn:aws:lambda::000000000000:function:fn",
            &"x".repeat(141),
        ] {
            assert_eq!(
                parse(input).unwrap_err().kind,
                ErrorKind::Validation,
                "{input:?}"
            );
        }
    }

    #[test]
    fn another_regions_arn_is_not_found_as_lambda_words_it() {
        let err = parse("arn:aws:lambda:eu-west-1:000000000000:function:fn").unwrap_err();
        assert_eq!(err.kind, ErrorKind::ResourceNotFound);
        assert_eq!(
            err.message,
            "Functions from 'eu-west-1' are not reachable in this region ('us-east-1')"
        );
        let malformed = parse("arn:aws:lambda:invalid-region:000000000000:function:fn");
        assert_eq!(malformed.unwrap_err().kind, ErrorKind::Validation);
    }

    #[test]
    fn each_shape_quotes_its_own_pattern() {
        let a = account();
        let message = |shape| {
            FunctionRef::parse_as("fn!", shape, &a)
                .unwrap_err()
                .message
                .rsplit_once(": ")
                .map(|(_, pattern)| pattern.to_owned())
                .unwrap()
        };
        for shape in [
            NameShape::Function,
            NameShape::Namespaced,
            NameShape::Url,
            NameShape::Unqualified,
        ] {
            assert_eq!(message(shape), shape.pattern());
        }
        // Only the namespaced shape takes `$LATEST.PUBLISHED` and dots.
        assert!(FunctionRef::parse_as("fn:$LATEST.PUBLISHED", NameShape::Namespaced, &a).is_ok());
        assert!(FunctionRef::parse_as("fn:$LATEST.PUBLISHED", NameShape::Function, &a).is_err());
        assert!(FunctionRef::parse_as("fn:1", NameShape::Url, &a).is_err());
        assert!(FunctionRef::parse_as("fn:live", NameShape::Unqualified, &a).is_err());
    }

    #[test]
    fn query_qualifiers_follow_their_shape() {
        let a = account();
        let q = |shape, q| FunctionRef::parse_with_qualifier_as("fn", shape, Some(q), &a);
        // A wrongly cased `$LATEST` is well-formed: it names nothing, so it is not found later.
        assert_eq!(
            q(NameShape::Namespaced, "$latest")
                .unwrap()
                .qualifier
                .as_deref(),
            Some("$latest")
        );
        let err = q(NameShape::Namespaced, "bad!").unwrap_err();
        assert!(
            err.message
                .ends_with(r"\$(LATEST(\.PUBLISHED)?)|[a-zA-Z0-9-_$]+")
        );
        assert_eq!(
            q(NameShape::Url, "7").unwrap_err().kind,
            ErrorKind::Validation
        );
        assert_eq!(
            q(NameShape::Namespaced, &"a".repeat(129)).unwrap_err().kind,
            ErrorKind::Validation
        );
    }

    #[test]
    fn another_accounts_arn_is_not_found() {
        let err = parse("arn:aws:lambda:us-east-1:123456789012:function:fn").unwrap_err();
        assert_eq!(err.kind, ErrorKind::ResourceNotFound);
    }

    #[test]
    fn qualifier_in_name_and_query_must_agree() {
        let a = account();
        let f = FunctionRef::parse_with_qualifier("fn", Some("2"), &a).unwrap();
        assert_eq!(f.qualifier.as_deref(), Some("2"));
        assert!(FunctionRef::parse_with_qualifier("fn:2", Some("2"), &a).is_ok());
        let err = FunctionRef::parse_with_qualifier("fn:1", Some("2"), &a).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidParameterValue);
    }
}
