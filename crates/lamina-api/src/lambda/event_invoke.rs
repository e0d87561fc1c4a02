//! Put / Update / Get / Delete / ListFunctionEventInvokeConfigs:
//! `/2019-09-25/functions/{name}/event-invoke-config` (and `/list`).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lamina_core::Error;
use lamina_core::arn::{FunctionRef, LATEST, NameShape};
use lamina_core::event_invoke::{EventInvokeConfig, EventInvokeInput};
use lamina_store::{Change, Expect};
use serde_json::{Value, json};

use crate::lambda::functions::{function_not_found, load};
use crate::{
    ApiResult, ApiState, QueryPairs, SharedState, json, max_items_up_to, parse_body, retrying,
};

/// The function and qualifier a request names (`$LATEST` for the function itself).
fn target(state: &ApiState, function: &str, query: &QueryPairs) -> ApiResult<(String, String)> {
    let function =
        FunctionRef::parse_with_qualifier(function, query.get("Qualifier"), &state.account)?;
    Ok((
        function.name,
        function.qualifier.unwrap_or_else(|| LATEST.to_owned()),
    ))
}

fn not_configured(state: &ApiState, function: &str, qualifier: &str) -> Error {
    Error::not_found(format!(
        "The function {} doesn't have an EventInvokeConfig",
        state.account.qualified_arn(function, qualifier)
    ))
}

/// Checks that the function and the version or alias exist; returns the function's generation.
async fn existing(state: &ApiState, function: &str, qualifier: &str) -> ApiResult<u64> {
    let (_, generation) = load(state, function).await?;
    let exists = if qualifier == LATEST {
        true
    } else if qualifier.bytes().all(|b| b.is_ascii_digit()) {
        state.store.version(function, qualifier).await?.is_some()
    } else {
        state.store.alias(function, qualifier).await?.is_some()
    };
    if !exists {
        return Err(function_not_found(state, function, Some(qualifier)).into());
    }
    Ok(generation)
}

fn render(state: &ApiState, function: &str, config: &EventInvokeConfig) -> Value {
    let destination = |target: &Option<String>| match target {
        Some(target) => json!({ "Destination": target }),
        None => json!({}),
    };
    let mut out = json!({
        "LastModified": config.last_modified,
        "FunctionArn": state.account.qualified_arn(function, &config.qualifier),
        "DestinationConfig": {
            "OnSuccess": destination(&config.on_success),
            "OnFailure": destination(&config.on_failure),
        },
    });
    if let Some(retries) = config.maximum_retry_attempts {
        out["MaximumRetryAttempts"] = json!(retries);
    }
    if let Some(age) = config.maximum_event_age {
        out["MaximumEventAgeInSeconds"] = json!(age);
    }
    out
}

/// Now, in epoch seconds with milliseconds (the API's `LastModified`).
fn now_s() -> f64 {
    let millis = lamina_core::time::now().unix_timestamp_nanos() / 1_000_000;
    millis as f64 / 1000.0
}

/// Put (`replace`) or Update: validates the request, then commits the new configuration.
async fn write(
    state: &ApiState,
    function: &str,
    query: &QueryPairs,
    body: &Bytes,
    replace: bool,
) -> ApiResult<Response> {
    let (name, qualifier) = target(state, function, query)?;
    // A Put that sets nothing is refused before the function is looked up, as Lambda does.
    let input: EventInvokeInput = parse_body(body)?;
    if replace && input.is_empty() {
        return Err(Error::invalid_parameter(
            "You must specify at least one of error handling or destination setting.",
        )
        .into());
    }
    let config = retrying!({
        let input = input.clone();
        let generation = existing(state, &name, &qualifier).await?;
        let current = state.store.event_invoke_config(&name, &qualifier).await?;
        let config = match current {
            Some(mut config) if !replace => {
                config.update(input, &state.account, now_s())?;
                config
            }
            None if !replace => return Err(not_configured(state, &name, &qualifier).into()),
            _ => EventInvokeConfig::put(input, &qualifier, &state.account, now_s())?,
        };
        state
            .store
            .commit(
                &name,
                Expect::Generation(generation),
                vec![Change::PutEventInvokeConfig(config.clone())],
            )
            .await?;
        Ok(config)
    })?;
    Ok(json(StatusCode::OK, render(state, &name, &config)))
}

pub async fn put(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
    body: Bytes,
) -> ApiResult<Response> {
    write(&state, &function, &query, &body, true).await
}

pub async fn update(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
    body: Bytes,
) -> ApiResult<Response> {
    write(&state, &function, &query, &body, false).await
}

pub async fn get(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
) -> ApiResult<Response> {
    let (name, qualifier) = target(&state, &function, &query)?;
    existing(&state, &name, &qualifier).await?;
    let config = state
        .store
        .event_invoke_config(&name, &qualifier)
        .await?
        .ok_or_else(|| not_configured(&state, &name, &qualifier))?;
    Ok(json(StatusCode::OK, render(&state, &name, &config)))
}

pub async fn delete(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
) -> ApiResult<Response> {
    let (name, qualifier) = target(&state, &function, &query)?;
    retrying!({
        let generation = existing(&state, &name, &qualifier).await?;
        if state
            .store
            .event_invoke_config(&name, &qualifier)
            .await?
            .is_none()
        {
            return Err(not_configured(&state, &name, &qualifier).into());
        }
        state
            .store
            .commit(
                &name,
                Expect::Generation(generation),
                vec![Change::DeleteEventInvokeConfig(qualifier.clone())],
            )
            .await?;
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
) -> ApiResult<Response> {
    let name =
        FunctionRef::parse_as(&function, NameShape::Namespaced, &state.account)?.unqualified()?;
    load(&state, &name).await?;
    let limit = max_items_up_to(&query, 50)?;
    let mut configs = state.store.event_invoke_configs(&name).await?;
    // The marker is the qualifier of the last configuration of the previous page.
    if let Some(marker) = query.get("Marker").filter(|m| !m.is_empty()) {
        let Some(at) = configs.iter().position(|c| c.qualifier == marker) else {
            return Err(Error::invalid_parameter(format!("Invalid Marker: {marker}")).into());
        };
        configs.drain(..=at);
    }
    let page = &configs[..configs.len().min(limit)];
    let mut out = json!({
        "FunctionEventInvokeConfigs": page
            .iter()
            .map(|c| render(&state, &name, c))
            .collect::<Vec<_>>(),
    });
    if configs.len() > limit {
        out["NextMarker"] = json!(page[limit - 1].qualifier);
    }
    Ok(json(StatusCode::OK, out))
}
