//! Naming functions: the forms a client may use for one (`name`, `name:qualifier`, a partial ARN,
//! a full ARN) and the ARNs Lamina hands back.

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

/// A function as a request names it, before the qualifier is resolved to a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: String,
    pub qualifier: Option<String>,
}

impl FunctionRef {
    /// Parses any of the four forms Lambda accepts. `account` rejects ARNs of another account,
    /// which this platform cannot hold. The region of an ARN is not checked: clients sign
    /// requests for whichever region they are configured with, and one Lamina serves them all.
    pub fn parse(input: &str, account: &Account) -> Result<Self> {
        let parts: Vec<&str> = input.split(':').collect();
        let (name, qualifier, owner) = match parts.as_slice() {
            [name] => (*name, None, None),
            [name, qualifier] => (*name, Some(*qualifier), None),
            [owner, "function", name] => (*name, None, Some(*owner)),
            [owner, "function", name, qualifier] => (*name, Some(*qualifier), Some(*owner)),
            ["arn", partition, "lambda", _region, owner, "function", name]
                if partition.starts_with("aws") =>
            {
                (*name, None, Some(*owner))
            }
            [
                "arn",
                partition,
                "lambda",
                _region,
                owner,
                "function",
                name,
                qualifier,
            ] if partition.starts_with("aws") => (*name, Some(*qualifier), Some(*owner)),
            _ => return Err(bad_function_name(input)),
        };
        if !is_function_name(name) {
            return Err(bad_function_name(input));
        }
        if let Some(qualifier) = qualifier
            && !is_qualifier(qualifier)
        {
            return Err(bad_function_name(input));
        }
        if let Some(owner) = owner
            && owner != account.account_id
        {
            return Err(Error::not_found(format!(
                "Function not found: {input} (this platform's account is {})",
                account.account_id
            )));
        }
        Ok(Self {
            name: name.to_owned(),
            qualifier: qualifier.map(str::to_owned),
        })
    }

    /// Parses the path's function name and merges the `Qualifier` query parameter into it;
    /// the two must agree when both are given.
    pub fn parse_with_qualifier(
        input: &str,
        qualifier: Option<&str>,
        account: &Account,
    ) -> Result<Self> {
        let mut function = Self::parse(input, account)?;
        match (function.qualifier.as_deref(), qualifier) {
            (_, None) | (_, Some("")) => {}
            (None, Some(q)) => {
                if !is_qualifier(q) {
                    return Err(Error::validation(format!(
                        "1 validation error detected: Value '{q}' at 'qualifier' failed to \
                         satisfy constraint: Member must satisfy regular expression pattern: \
                         (|[a-zA-Z0-9$_-]+)"
                    )));
                }
                function.qualifier = Some(q.to_owned());
            }
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

/// `[a-zA-Z0-9-_]{1,64}`: the name part of every function identifier.
pub fn is_function_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `$LATEST`, a version number or an alias name.
pub fn is_qualifier(qualifier: &str) -> bool {
    qualifier == LATEST
        || ((1..=128).contains(&qualifier.len())
            && qualifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

fn bad_function_name(input: &str) -> Error {
    Error::validation(format!(
        "1 validation error detected: Value '{input}' at 'functionName' failed to satisfy \
         constraint: Member must satisfy regular expression pattern: \
         (arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{{2}}(-gov)?-[a-z]+-\\d{{1}}:)?(\\d{{12}}:)?\
         (function:)?([a-zA-Z0-9-_]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?"
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
                "arn:aws:lambda:eu-west-1:000000000000:function:fn:live",
                ("fn", Some("live")),
            ),
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
            &"x".repeat(65),
        ] {
            assert_eq!(
                parse(input).unwrap_err().kind,
                ErrorKind::Validation,
                "{input:?}"
            );
        }
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
