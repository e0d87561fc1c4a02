//! Put / Get / Delete / ListProvisionedConcurrencyConfigs:
//! `/2019-09-30/functions/{name}/provisioned-concurrency`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lamina_core::arn::{FunctionRef, LATEST, NameShape};
use lamina_core::concurrency::{self, ProvisionedConfig};
use lamina_core::invoke::{ProvisionedState, ProvisionedStatus};
use lamina_core::{Error, ErrorKind};
use lamina_store::{Change, Expect};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::lambda::functions::{function_not_found, load};
use crate::{
    ApiError, ApiResult, ApiState, QueryPairs, SharedState, json, max_items_up_to, parse_body,
    retrying,
};

fn unpublished() -> Error {
    Error::invalid_parameter(
        "Provisioned Concurrency Configs cannot be applied to unpublished function versions.",
    )
}

fn not_configured() -> Error {
    Error::new(
        ErrorKind::ProvisionedConcurrencyConfigNotFound,
        "No Provisioned Concurrency Config found for this function",
    )
}

/// The function and the qualifier a request names; the qualifier must be a version number or
/// an alias. `$LATEST` is refused in Lambda's words, which differ for Put.
fn target(
    state: &ApiState,
    function: &str,
    query: &QueryPairs,
    put: bool,
) -> ApiResult<(String, String)> {
    let function = FunctionRef::parse_with_qualifier_as(
        function,
        NameShape::Function,
        query.get("Qualifier"),
        &state.account,
    )?;
    let not_published = || {
        Error::invalid_parameter(
            "The function resource provided must be an alias or a published version.",
        )
    };
    match function.qualifier {
        None => Err(not_published().into()),
        Some(q) if q == LATEST && put => Err(unpublished().into()),
        Some(q) if q == LATEST => Err(not_published().into()),
        Some(q) => Ok((function.name, q)),
    }
}

fn is_version(qualifier: &str) -> bool {
    qualifier.bytes().all(|b| b.is_ascii_digit())
}

/// The version or alias a request names must exist, whether or not the function does; Lambda
/// answers for the qualifier first ("Cannot find alias arn: …").
async fn check_target(state: &ApiState, name: &str, qualifier: &str) -> ApiResult<()> {
    if is_version(qualifier) {
        if state.store.version(name, qualifier).await?.is_none() {
            return Err(function_not_found(state, name, Some(qualifier)).into());
        }
    } else if state.store.alias(name, qualifier).await?.is_none() {
        return Err(Error::not_found(format!(
            "Cannot find alias arn: {}",
            state.account.qualified_arn(name, qualifier)
        ))
        .into());
    }
    Ok(())
}

/// The configuration as the API shows it, with the engine's progress on it.
fn render(config: &ProvisionedConfig, live: Option<ProvisionedStatus>) -> Value {
    // Until the engine has taken up this very request, it is in progress.
    let live = live.filter(|s| s.requested == config.requested);
    let (allocated, available, state, reason) = match live {
        Some(s) => (s.allocated, s.available, s.state, s.reason),
        None => (0, 0, ProvisionedState::InProgress, None),
    };
    let mut out = json!({
        "RequestedProvisionedConcurrentExecutions": config.requested,
        "AvailableProvisionedConcurrentExecutions": available,
        "AllocatedProvisionedConcurrentExecutions": allocated,
        "Status": state.as_str(),
        "LastModified": config.last_modified,
    });
    if let Some(reason) = reason {
        out["StatusReason"] = json!(reason);
    }
    out
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutProvisioned {
    provisioned_concurrent_executions: i64,
}

pub async fn put(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
    body: Bytes,
) -> ApiResult<Response> {
    let request: PutProvisioned = parse_body(&body)?;
    let (name, qualifier) = target(&state, &function, &query, true)?;
    let requested = u32::try_from(request.provisioned_concurrent_executions)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            Error::validation(format!(
                "1 validation error detected: Value '{}' at 'provisionedConcurrentExecutions' \
                 failed to satisfy constraint: Member must have value greater than or equal to 1",
                request.provisioned_concurrent_executions
            ))
        })?;
    let config = retrying!({
        check_target(&state, &name, &qualifier).await?;
        let (_, generation) = load(&state, &name).await?;
        let configs = state.store.provisioned(&name).await?;
        let has_config = |q: &str| configs.iter().any(|c| c.qualifier == q);
        if is_version(&qualifier) {
            let aliases = state.store.aliases(&name).await?;
            if aliases
                .iter()
                .any(|a| a.function_version == qualifier && has_config(&a.name))
            {
                return Err(Error::conflict(
                    "Version is pointed by a Provisioned Concurrency alias",
                )
                .into());
            }
        } else {
            let Some(alias) = state.store.alias(&name, &qualifier).await? else {
                return Err(ApiError::Retry);
            };
            if alias.function_version == LATEST {
                return Err(unpublished().into());
            }
            if alias.versions().any(has_config) {
                return Err(Error::conflict(
                    "Alias can't be used for Provisioned Concurrency configuration on an already \
                     Provisioned version",
                )
                .into());
            }
        }
        let others: u32 = configs
            .iter()
            .filter(|c| c.qualifier != qualifier)
            .map(|c| c.requested)
            .sum();
        let allocations = state.store.allocations().await?;
        concurrency::check_provisioned(state.concurrency, &allocations, &name, others, requested)?;
        let config = ProvisionedConfig {
            qualifier: qualifier.clone(),
            requested,
            last_modified: lamina_core::time::lambda_timestamp(lamina_core::time::now()),
        };
        state
            .store
            .commit(
                &name,
                Expect::Generation(generation),
                vec![Change::PutProvisioned(config.clone())],
            )
            .await?;
        Ok(config)
    })?;
    tracing::info!(function = %name, %qualifier, requested, "provisioned concurrency configured");
    Ok(json(StatusCode::ACCEPTED, render(&config, None)))
}

/// GET: ListProvisionedConcurrencyConfigs with `List=ALL`, else GetProvisionedConcurrencyConfig.
pub async fn get_or_list(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
) -> ApiResult<Response> {
    if query.get("List") == Some("ALL") {
        return list(&state, &function, &query).await;
    }
    let (name, qualifier) = target(&state, &function, &query, false)?;
    check_target(&state, &name, &qualifier).await?;
    load(&state, &name).await?;
    let config = state
        .store
        .provisioned(&name)
        .await?
        .into_iter()
        .find(|c| c.qualifier == qualifier)
        .ok_or_else(not_configured)?;
    let live = state.invoker.provisioned(&name, &qualifier);
    Ok(json(StatusCode::OK, render(&config, live)))
}

async fn list(state: &ApiState, function: &str, query: &QueryPairs) -> ApiResult<Response> {
    let name = FunctionRef::parse(function, &state.account)?.unqualified()?;
    load(state, &name).await?;
    let limit = max_items_up_to(query, 50)?;
    let after = query.get("Marker").filter(|m| !m.is_empty());
    let configs: Vec<ProvisionedConfig> = state
        .store
        .provisioned(&name)
        .await?
        .into_iter()
        .filter(|c| after.is_none_or(|after| c.qualifier.as_str() > after))
        .collect();
    let page = &configs[..configs.len().min(limit)];
    let items: Vec<Value> = page
        .iter()
        .map(|config| {
            let mut item = render(config, state.invoker.provisioned(&name, &config.qualifier));
            item["FunctionArn"] = json!(state.account.qualified_arn(&name, &config.qualifier));
            item
        })
        .collect();
    let mut out = json!({ "ProvisionedConcurrencyConfigs": items });
    if configs.len() > limit {
        out["NextMarker"] = json!(page[limit - 1].qualifier);
    }
    Ok(json(StatusCode::OK, out))
}

pub async fn delete(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
) -> ApiResult<Response> {
    let (name, qualifier) = target(&state, &function, &query, false)?;
    retrying!({
        check_target(&state, &name, &qualifier).await?;
        let (_, generation) = load(&state, &name).await?;
        let configured = state
            .store
            .provisioned(&name)
            .await?
            .iter()
            .any(|c| c.qualifier == qualifier);
        // Deleting what is not configured succeeds, as in Lambda.
        if !configured {
            return Ok(());
        }
        state
            .store
            .commit(
                &name,
                Expect::Generation(generation),
                vec![Change::DeleteProvisioned(qualifier.clone())],
            )
            .await?;
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
