//! Resource-based policies: the statements AddPermission adds, kept as the IAM policy document
//! GetPolicy returns.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{Error, ErrorKind, Result, validate};

/// Lambda's limit on one function's policy document.
pub const MAX_POLICY_BYTES: usize = 20_480;

/// The policy of one function or one of its qualifiers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub statements: Vec<Value>,
    pub revision_id: String,
}

/// The AddPermission request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddPermission {
    pub statement_id: String,
    pub action: String,
    pub principal: String,
    pub source_arn: Option<String>,
    pub source_account: Option<String>,
    #[serde(rename = "PrincipalOrgID")]
    pub principal_org_id: Option<String>,
    pub event_source_token: Option<String>,
    pub function_url_auth_type: Option<String>,
    pub revision_id: Option<String>,
}

impl Policy {
    /// The IAM policy document, as the `Policy` string of GetPolicy.
    pub fn document(&self) -> String {
        json!({"Version": "2012-10-17", "Id": "default", "Statement": self.statements}).to_string()
    }

    /// Adds the statement that `request` describes, granting it on `resource` (an ARN).
    /// Returns the statement as AddPermission reports it.
    pub fn add(&mut self, request: &AddPermission, resource: &str) -> Result<Value> {
        validate::statement_id(&request.statement_id)?;
        validate::action(&request.action)?;
        validate::principal(&request.principal)?;
        if let Some(auth) = &request.function_url_auth_type
            && auth != "NONE"
            && auth != "AWS_IAM"
        {
            return Err(Error::validation(format!(
                "1 validation error detected: Value '{auth}' at 'functionUrlAuthType' failed \
                     to satisfy constraint: Member must satisfy enum value set: [NONE, AWS_IAM]"
            )));
        }
        if self
            .statements
            .iter()
            .any(|s| s["Sid"] == request.statement_id.as_str())
        {
            return Err(Error::conflict(format!(
                "The statement id ({}) provided already exists. Please provide a new statement \
                 id, or remove the existing statement.",
                request.statement_id
            )));
        }
        let statement = statement(request, resource);
        self.statements.push(statement.clone());
        if self.document().len() > MAX_POLICY_BYTES {
            self.statements.pop();
            return Err(Error::new(
                ErrorKind::PolicyLengthExceeded,
                "The final policy size is bigger than the limit.",
            ));
        }
        Ok(statement)
    }

    /// Whether anyone may call the function URL of `AuthType: NONE` this policy belongs to: a
    /// statement allows `lambda:InvokeFunctionUrl` (or `lambda:*`) to `*`, and if it has a
    /// `lambda:FunctionUrlAuthType` condition, that is `NONE`.
    pub fn grants_public_url(&self) -> bool {
        self.statements.iter().any(|statement| {
            let anyone = statement["Principal"] == "*" || statement["Principal"]["AWS"] == "*";
            let action = statement["Action"] == "lambda:InvokeFunctionUrl"
                || statement["Action"] == "lambda:*";
            let auth = &statement["Condition"]["StringEquals"]["lambda:FunctionUrlAuthType"];
            statement["Effect"] == "Allow" && anyone && action && (auth.is_null() || auth == "NONE")
        })
    }

    /// Removes the statement `sid`.
    pub fn remove(&mut self, sid: &str) -> Result<()> {
        let before = self.statements.len();
        self.statements.retain(|s| s["Sid"] != sid);
        if self.statements.len() == before {
            return Err(Error::not_found(format!(
                "Statement {sid} is not found in resource policy."
            )));
        }
        Ok(())
    }
}

fn statement(request: &AddPermission, resource: &str) -> Value {
    let principal = &request.principal;
    let principal = if principal == "*" {
        json!("*")
    } else if principal.ends_with(".amazonaws.com") || principal.ends_with(".amazon.com") {
        json!({ "Service": principal })
    } else if principal.len() == 12 && principal.bytes().all(|b| b.is_ascii_digit()) {
        json!({ "AWS": format!("arn:aws:iam::{principal}:root") })
    } else {
        json!({ "AWS": principal })
    };
    let mut string_equals = Map::new();
    if let Some(account) = &request.source_account {
        string_equals.insert("AWS:SourceAccount".into(), json!(account));
    }
    if let Some(org) = &request.principal_org_id {
        string_equals.insert("aws:PrincipalOrgID".into(), json!(org));
    }
    if let Some(token) = &request.event_source_token {
        string_equals.insert("lambda:EventSourceToken".into(), json!(token));
    }
    if let Some(auth) = &request.function_url_auth_type {
        string_equals.insert("lambda:FunctionUrlAuthType".into(), json!(auth));
    }
    let mut condition = Map::new();
    if !string_equals.is_empty() {
        condition.insert("StringEquals".into(), Value::Object(string_equals));
    }
    if let Some(arn) = &request.source_arn {
        condition.insert("ArnLike".into(), json!({ "AWS:SourceArn": arn }));
    }
    let mut statement = json!({
        "Sid": request.statement_id,
        "Effect": "Allow",
        "Principal": principal,
        "Action": request.action,
        "Resource": resource,
    });
    if !condition.is_empty() {
        statement["Condition"] = Value::Object(condition);
    }
    statement
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(action: &str, principal: &str, auth: Option<&str>) -> AddPermission {
        AddPermission {
            statement_id: format!("s{}", action.len() + principal.len()),
            action: action.into(),
            principal: principal.into(),
            source_arn: None,
            source_account: None,
            principal_org_id: None,
            event_source_token: None,
            function_url_auth_type: auth.map(Into::into),
            revision_id: None,
        }
    }

    #[test]
    fn public_url_needs_invoke_function_url_for_anyone_under_auth_none() {
        let resource = "arn:aws:lambda:us-east-1:000000000000:function:f";
        let public = |request: AddPermission| {
            let mut policy = Policy::default();
            policy.add(&request, resource).unwrap();
            policy.grants_public_url()
        };
        assert!(public(grant("lambda:InvokeFunctionUrl", "*", Some("NONE"))));
        assert!(public(grant("lambda:InvokeFunctionUrl", "*", None)));
        assert!(!public(grant(
            "lambda:InvokeFunctionUrl",
            "*",
            Some("AWS_IAM")
        )));
        assert!(!public(grant("lambda:InvokeFunction", "*", Some("NONE"))));
        assert!(!public(grant(
            "lambda:InvokeFunctionUrl",
            "123456789012",
            Some("NONE")
        )));
        assert!(!Policy::default().grants_public_url());
    }

    fn request(sid: &str, principal: &str) -> AddPermission {
        AddPermission {
            statement_id: sid.into(),
            action: "lambda:InvokeFunction".into(),
            principal: principal.into(),
            source_arn: Some("arn:aws:s3:::bucket".into()),
            source_account: None,
            principal_org_id: None,
            event_source_token: None,
            function_url_auth_type: None,
            revision_id: None,
        }
    }

    #[test]
    fn builds_statements_as_lambda_does() {
        let mut policy = Policy::default();
        let s = policy
            .add(&request("s3", "s3.amazonaws.com"), "arn:fn")
            .unwrap();
        assert_eq!(s["Principal"], json!({"Service": "s3.amazonaws.com"}));
        assert_eq!(
            s["Condition"]["ArnLike"]["AWS:SourceArn"],
            "arn:aws:s3:::bucket"
        );
        let s = policy
            .add(&request("acct", "123456789012"), "arn:fn")
            .unwrap();
        assert_eq!(s["Principal"]["AWS"], "arn:aws:iam::123456789012:root");
        let doc: Value = serde_json::from_str(&policy.document()).unwrap();
        assert_eq!(doc["Statement"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn duplicate_and_missing_statements() {
        let mut policy = Policy::default();
        policy.add(&request("a", "*"), "arn:fn").unwrap();
        let dup = policy.add(&request("a", "*"), "arn:fn").unwrap_err();
        assert_eq!(dup.kind, ErrorKind::ResourceConflict);
        assert_eq!(
            policy.remove("b").unwrap_err().kind,
            ErrorKind::ResourceNotFound
        );
        policy.remove("a").unwrap();
        assert!(policy.statements.is_empty());
    }

    #[test]
    fn refuses_a_policy_over_the_limit() {
        let mut policy = Policy::default();
        let mut i = 0;
        let err = loop {
            let mut r = request(&format!("sid{i}"), "*");
            r.source_arn = Some(format!("arn:aws:s3:::{}", "b".repeat(900)));
            match policy.add(&r, "arn:fn") {
                Ok(_) => i += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind, ErrorKind::PolicyLengthExceeded);
        assert!(policy.document().len() <= MAX_POLICY_BYTES);
    }
}
