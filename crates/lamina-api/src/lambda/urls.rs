//! Create / Get / Update / Delete / ListFunctionUrlConfigs: `/2021-10-31/functions/{name}/url`
//! (and `/urls` for the list).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lamina_core::Error;
use lamina_core::arn::{FunctionRef, NameShape};
use lamina_core::url::{CreateUrl, UpdateUrl, UrlConfig, new_url_id};
use lamina_store::{Change, Expect};
use serde_json::{Value, json};

use crate::lambda::functions::{function_not_found, load};
use crate::{
    ApiResult, ApiState, QueryPairs, SharedState, json, max_items_up_to, parse_body, retrying,
};

fn not_found() -> Error {
    Error::not_found("The resource you requested does not exist.")
}

/// The function and the URL's qualifier (an alias, never a version number or `$LATEST`).
fn target(
    state: &ApiState,
    function: &str,
    query: &QueryPairs,
) -> ApiResult<(String, Option<String>)> {
    // The URL shapes take no version: `$LATEST` and numbers break their patterns.
    let function = FunctionRef::parse_with_qualifier_as(
        function,
        NameShape::Url,
        query.get("Qualifier"),
        &state.account,
    )?;
    Ok((function.name, function.qualifier))
}

/// Which members a response carries besides those every one has.
#[derive(Clone, Copy)]
struct Shown {
    /// `LastModifiedTime`: all but CreateFunctionUrlConfig's answer.
    last_modified: bool,
    /// `InvokeMode`: Get and List always show it; Create and Update echo it only when the
    /// request set it, as Lambda's answers do.
    invoke_mode: bool,
}

const READ: Shown = Shown {
    last_modified: true,
    invoke_mode: true,
};

/// The configuration as the API shows it.
fn render(state: &ApiState, function: &str, config: &UrlConfig, shown: Shown) -> Value {
    let arn = match &config.qualifier {
        Some(q) => state.account.qualified_arn(function, q),
        None => state.account.function_arn(function),
    };
    let mut out = json!({
        "FunctionUrl": state.urls.url_of(&config.url_id),
        "FunctionArn": arn,
        "AuthType": config.auth_type.as_str(),
        "CreationTime": config.creation_time,
    });
    if shown.invoke_mode {
        out["InvokeMode"] = json!(config.invoke_mode.as_str());
    }
    if let Some(cors) = &config.cors {
        out["Cors"] = json!(cors);
    }
    if shown.last_modified {
        out["LastModifiedTime"] = json!(config.last_modified_time);
    }
    out
}

fn now() -> String {
    lamina_core::time::lambda_timestamp(lamina_core::time::now())
}

pub async fn create(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
    body: Bytes,
) -> ApiResult<Response> {
    let (name, qualifier) = target(&state, &function, &query)?;
    let mut invoke_mode_set = false;
    let config = retrying!({
        let request: CreateUrl = parse_body(&body)?;
        invoke_mode_set = request.invoke_mode.is_some();
        // The request is checked before anything is looked up, as Lambda does.
        let config = UrlConfig::create(request, new_url_id(), qualifier.clone(), &now())?;
        let (_, generation) = load(&state, &name).await?;
        if let Some(alias) = &qualifier
            && state.store.alias(&name, alias).await?.is_none()
        {
            return Err(function_not_found(&state, &name, Some(alias)).into());
        }
        if state
            .store
            .url(&name, qualifier.as_deref())
            .await?
            .is_some()
        {
            let arn = match &qualifier {
                Some(q) => state.account.qualified_arn(&name, q),
                None => state.account.function_arn(&name),
            };
            return Err(Error::conflict(format!(
                "Failed to create function url config for [functionArn = {arn}]. Error message:  \
                 FunctionUrlConfig exists for this Lambda function"
            ))
            .into());
        }
        state
            .store
            .commit(
                &name,
                Expect::Generation(generation),
                vec![Change::PutUrl(config.clone())],
            )
            .await?;
        Ok(config)
    })?;
    tracing::info!(function = %name, url = %state.urls.url_of(&config.url_id), "function URL created");
    let shown = Shown {
        last_modified: false,
        invoke_mode: invoke_mode_set,
    };
    Ok(json(
        StatusCode::CREATED,
        render(&state, &name, &config, shown),
    ))
}

pub async fn get(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
) -> ApiResult<Response> {
    let (name, qualifier) = target(&state, &function, &query)?;
    load(&state, &name).await?;
    let config = state
        .store
        .url(&name, qualifier.as_deref())
        .await?
        .ok_or_else(not_found)?;
    Ok(json(StatusCode::OK, render(&state, &name, &config, READ)))
}

pub async fn update(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
    body: Bytes,
) -> ApiResult<Response> {
    let (name, qualifier) = target(&state, &function, &query)?;
    let mut invoke_mode_set = false;
    let config = retrying!({
        let request: UpdateUrl = parse_body(&body)?;
        invoke_mode_set = request.invoke_mode.is_some();
        let (_, generation) = load(&state, &name).await?;
        let mut config = state
            .store
            .url(&name, qualifier.as_deref())
            .await?
            .ok_or_else(not_found)?;
        config.update(request, &now())?;
        state
            .store
            .commit(
                &name,
                Expect::Generation(generation),
                vec![Change::PutUrl(config.clone())],
            )
            .await?;
        Ok(config)
    })?;
    let shown = Shown {
        last_modified: true,
        invoke_mode: invoke_mode_set,
    };
    Ok(json(StatusCode::OK, render(&state, &name, &config, shown)))
}

pub async fn delete(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
) -> ApiResult<Response> {
    let (name, qualifier) = target(&state, &function, &query)?;
    retrying!({
        let (_, generation) = load(&state, &name).await?;
        if state
            .store
            .url(&name, qualifier.as_deref())
            .await?
            .is_none()
        {
            return Err(not_found().into());
        }
        state
            .store
            .commit(
                &name,
                Expect::Generation(generation),
                vec![Change::DeleteUrl(qualifier.clone())],
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
    let name = FunctionRef::parse_as(&function, NameShape::Url, &state.account)?.unqualified()?;
    load(&state, &name).await?;
    let limit = max_items_up_to(&query, 50)?;
    let mut configs = state.store.urls(&name).await?;
    // The marker is the url id of the last configuration of the previous page.
    if let Some(marker) = query.get("Marker").filter(|m| !m.is_empty()) {
        let Some(at) = configs.iter().position(|c| c.url_id == marker) else {
            return Err(Error::invalid_parameter(format!("Invalid Marker: {marker}")).into());
        };
        configs.drain(..=at);
    }
    let page = &configs[..configs.len().min(limit)];
    let mut out = json!({
        "FunctionUrlConfigs": page
            .iter()
            .map(|c| render(&state, &name, c, READ))
            .collect::<Vec<_>>(),
    });
    if configs.len() > limit {
        out["NextMarker"] = json!(page[limit - 1].url_id);
    }
    Ok(json(StatusCode::OK, out))
}
