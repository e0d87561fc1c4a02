//! Function-level settings: tags, reserved concurrency, recursive loop detection, and the
//! account's settings.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lamina_core::arn::{FunctionRef, NameShape};
use lamina_core::function::{Function, RecursiveLoop};
use lamina_core::{Error, concurrency, validate};
use lamina_store::{Change, Expect};
use serde::Deserialize;
use serde_json::json;

use crate::lambda::functions::load;
use crate::retrying;
use crate::{ApiResult, ApiState, QueryPairs, SharedState, json, parse_body};

/// `TaggableResource` of the API model, as Lambda quotes it.
const TAGGABLE_RESOURCE: &str = r"arn:(aws[a-zA-Z-]*):lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:(function:[a-zA-Z0-9-_]+(:(\$LATEST|[a-zA-Z0-9-_]+))?|code-signing-config:csc-[a-z0-9]{17}|event-source-mapping:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|(capacity-provider|network-connector):[a-zA-Z0-9-_]{1,64})";

/// The function a tagging ARN names. Only function ARNs are taggable here, and never a version
/// or alias, as in Lambda.
fn tagged_function(state: &ApiState, resource: &str) -> ApiResult<String> {
    if !resource.starts_with("arn:") || !resource.contains(":function:") {
        return Err(Error::validation(format!(
            "1 validation error detected: Value '{resource}' at 'resource' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: {TAGGABLE_RESOURCE}"
        ))
        .into());
    }
    let function = FunctionRef::parse(resource, &state.account)?;
    if function.qualifier.is_some() {
        return Err(Error::invalid_parameter(
            "Tags on function aliases and versions are not supported. Please specify a function \
             ARN.",
        )
        .into());
    }
    Ok(function.name)
}

/// Applies `change` to the function's record and commits it, again from a fresh read if another
/// writer got there first.
async fn change_function(
    state: &ApiState,
    name: &str,
    change: impl Fn(&mut Function) -> ApiResult<()>,
) -> ApiResult<()> {
    retrying!({
        let (mut function, generation) = load(state, name).await?;
        change(&mut function)?;
        let changes = vec![Change::PutFunction(function)];
        state
            .store
            .commit(name, Expect::Generation(generation), changes)
            .await?;
        Ok(())
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagResource {
    tags: BTreeMap<String, String>,
}

pub async fn tag(
    State(state): State<SharedState>,
    Path(resource): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let request: TagResource = parse_body(&body)?;
    let name = tagged_function(&state, &resource)?;
    change_function(&state, &name, |function| {
        function.tags.extend(request.tags.clone());
        Ok(validate::tags(&function.tags)?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn untag(
    State(state): State<SharedState>,
    Path(resource): Path<String>,
    Query(query): Query<QueryPairs>,
) -> ApiResult<Response> {
    let name = tagged_function(&state, &resource)?;
    let keys = query.all("tagKeys");
    // `TagKeys` is required; botocore sends an empty list as no parameter at all.
    if keys.is_empty() {
        return Err(Error::validation(
            "1 validation error detected: Value null at 'tagKeys' failed to satisfy constraint: \
             Member must not be null",
        )
        .into());
    }
    change_function(&state, &name, |function| {
        for key in &keys {
            function.tags.remove(key);
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_tags(
    State(state): State<SharedState>,
    Path(resource): Path<String>,
) -> ApiResult<Response> {
    let name = tagged_function(&state, &resource)?;
    let (function, _) = load(&state, &name).await?;
    Ok(json(StatusCode::OK, json!({ "Tags": function.tags })))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutConcurrency {
    reserved_concurrent_executions: i64,
}

pub async fn put_concurrency(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let request: PutConcurrency = parse_body(&body)?;
    let name = FunctionRef::parse(&function, &state.account)?.unqualified()?;
    let reserved = u32::try_from(request.reserved_concurrent_executions).map_err(|_| {
        Error::validation(format!(
            "1 validation error detected: Value '{}' at 'reservedConcurrentExecutions' failed to \
             satisfy constraint: Member must have value greater than or equal to 0",
            request.reserved_concurrent_executions
        ))
    })?;
    retrying!({
        let (mut function, generation) = load(&state, &name).await?;
        let allocations = state.store.allocations().await?;
        concurrency::check_reserved(state.concurrency, &allocations, &name, reserved)?;
        function.reserved_concurrency = Some(reserved);
        let changes = vec![Change::PutFunction(function)];
        state
            .store
            .commit(&name, Expect::Generation(generation), changes)
            .await?;
        Ok(())
    })?;
    Ok(json(
        StatusCode::OK,
        json!({ "ReservedConcurrentExecutions": reserved }),
    ))
}

pub async fn get_concurrency(
    State(state): State<SharedState>,
    Path(function): Path<String>,
) -> ApiResult<Response> {
    let name = FunctionRef::parse(&function, &state.account)?.unqualified()?;
    let (function, _) = load(&state, &name).await?;
    let out = match function.reserved_concurrency {
        Some(reserved) => json!({ "ReservedConcurrentExecutions": reserved }),
        None => json!({}),
    };
    Ok(json(StatusCode::OK, out))
}

pub async fn delete_concurrency(
    State(state): State<SharedState>,
    Path(function): Path<String>,
) -> ApiResult<Response> {
    let name = FunctionRef::parse(&function, &state.account)?.unqualified()?;
    change_function(&state, &name, |function| {
        function.reserved_concurrency = None;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRecursion {
    recursive_loop: String,
}

/// The recursion configuration takes `UnqualifiedFunctionName`: its pattern has no qualifier.
fn unqualified_name(state: &ApiState, function: &str) -> ApiResult<String> {
    Ok(FunctionRef::parse_as(function, NameShape::Unqualified, &state.account)?.name)
}

/// PutFunctionRecursionConfig (`PUT /2024-08-31/functions/{name}/recursion-config`).
pub async fn put_recursion(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let request: PutRecursion = parse_body(&body)?;
    let recursive_loop = RecursiveLoop::parse(&request.recursive_loop)?;
    let name = unqualified_name(&state, &function)?;
    change_function(&state, &name, |function| {
        function.recursive_loop = recursive_loop;
        Ok(())
    })
    .await?;
    Ok(json(
        StatusCode::OK,
        json!({ "RecursiveLoop": recursive_loop.as_str() }),
    ))
}

/// GetFunctionRecursionConfig.
pub async fn get_recursion(
    State(state): State<SharedState>,
    Path(function): Path<String>,
) -> ApiResult<Response> {
    let name = unqualified_name(&state, &function)?;
    let (function, _) = load(&state, &name).await?;
    Ok(json(
        StatusCode::OK,
        json!({ "RecursiveLoop": function.recursive_loop.as_str() }),
    ))
}

/// Lambda's default storage quota for all code in a region.
const TOTAL_CODE_SIZE: u64 = 80_530_636_800;

pub async fn account_settings(State(state): State<SharedState>) -> ApiResult<Response> {
    let usage = state.store.usage().await?;
    let limits = state.concurrency;
    let unreserved = concurrency::unreserved_reported(limits, &state.store.allocations().await?);
    Ok(json(
        StatusCode::OK,
        json!({
            "AccountLimit": {
                "TotalCodeSize": TOTAL_CODE_SIZE,
                "CodeSizeUnzipped": lamina_store::archive::MAX_UNZIPPED_BYTES,
                "CodeSizeZipped": lamina_store::archive::MAX_ZIPPED_BYTES,
                "ConcurrentExecutions": limits.account,
                "UnreservedConcurrentExecutions": unreserved,
            },
            "AccountUsage": {
                "TotalCodeSize": usage.total_code_size,
                "FunctionCount": usage.function_count,
            },
        }),
    ))
}
