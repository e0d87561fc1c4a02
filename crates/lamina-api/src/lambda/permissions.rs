//! AddPermission, GetPolicy, RemovePermission: the resource-based policy of a function or of
//! one of its versions or aliases.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lamina_core::Error;
use lamina_core::arn::{FunctionRef, LATEST};
use lamina_core::function::new_revision_id;
use lamina_core::policy::{AddPermission, Policy};
use lamina_store::{Change, Expect};
use serde_json::json;

use crate::lambda::functions::{check_revision, load, resolve_version};
use crate::retrying;
use crate::{ApiResult, ApiState, QueryPairs, SharedState, json, parse_body};

/// The function and the policy key of the qualifier (`""` for the function itself), after
/// checking that the qualifier names an existing version or alias.
async fn target(
    state: &ApiState,
    function: &str,
    query: &QueryPairs,
) -> ApiResult<(FunctionRef, String)> {
    let function =
        FunctionRef::parse_with_qualifier(function, query.get("Qualifier"), &state.account)?;
    load(state, &function.name).await?;
    let key = match function.qualifier.as_deref() {
        None | Some(LATEST) => String::new(),
        Some(q) => {
            resolve_version(state, &function).await?;
            q.to_owned()
        }
    };
    Ok((function, key))
}

fn no_policy() -> Error {
    Error::not_found("The resource you requested does not exist.")
}

pub async fn add(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
    body: Bytes,
) -> ApiResult<Response> {
    let request: AddPermission = parse_body(&body)?;
    let (function, key) = target(&state, &function, &query).await?;
    let resource = match key.as_str() {
        "" => state.account.function_arn(&function.name),
        q => state.account.qualified_arn(&function.name, q),
    };
    let statement = retrying!({
        let (_, generation) = load(&state, &function.name).await?;
        let mut policy = state
            .store
            .policy(&function.name, &key)
            .await?
            .unwrap_or_default();
        if request
            .revision_id
            .as_deref()
            .is_some_and(|r| !r.is_empty())
        {
            check_revision(request.revision_id.as_deref(), &policy.revision_id)?;
        }
        let statement = policy.add(&request, &resource)?;
        policy.revision_id = new_revision_id();
        let changes = vec![Change::PutPolicy(key.clone(), policy)];
        state
            .store
            .commit(&function.name, Expect::Generation(generation), changes)
            .await?;
        Ok(statement)
    })?;
    Ok(json(
        StatusCode::CREATED,
        json!({ "Statement": statement.to_string() }),
    ))
}

pub async fn get(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
) -> ApiResult<Response> {
    let (function, key) = target(&state, &function, &query).await?;
    let policy = state
        .store
        .policy(&function.name, &key)
        .await?
        .filter(|p| !p.statements.is_empty())
        .ok_or_else(no_policy)?;
    Ok(json(
        StatusCode::OK,
        json!({ "Policy": policy.document(), "RevisionId": policy.revision_id }),
    ))
}

pub async fn remove(
    State(state): State<SharedState>,
    Path((function, statement)): Path<(String, String)>,
    Query(query): Query<QueryPairs>,
) -> ApiResult<Response> {
    let (function, key) = target(&state, &function, &query).await?;
    retrying!({
        let (_, generation) = load(&state, &function.name).await?;
        let mut policy: Policy = state
            .store
            .policy(&function.name, &key)
            .await?
            .ok_or_else(no_policy)?;
        check_revision(query.get("RevisionId"), &policy.revision_id)?;
        policy.remove(&statement)?;
        policy.revision_id = new_revision_id();
        let change = if policy.statements.is_empty() {
            Change::DeletePolicy(key.clone())
        } else {
            Change::PutPolicy(key.clone(), policy)
        };
        state
            .store
            .commit(&function.name, Expect::Generation(generation), vec![change])
            .await?;
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
