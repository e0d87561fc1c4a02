//! CreateAlias, GetAlias, UpdateAlias, DeleteAlias, ListAliases.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lamina_core::Error;
use lamina_core::arn::{FunctionRef, LATEST};
use lamina_core::function::{Alias, CreateAlias, UpdateAlias};
use lamina_store::{Change, Expect};
use serde_json::json;

use super::render;
use crate::lambda::functions::{check_revision, function_not_found, load};
use crate::retrying;
use crate::{ApiResult, ApiState, QueryPairs, SharedState, json, max_items, parse_body};

fn alias_not_found(state: &ApiState, function: &str, alias: &str) -> Error {
    Error::not_found(format!(
        "Alias not found: {}",
        state.account.qualified_arn(function, alias)
    ))
}

/// Every version an alias routes to must exist.
async fn check_versions(state: &ApiState, function: &str, alias: &Alias) -> ApiResult<()> {
    for version in alias.versions() {
        if version != LATEST && state.store.version(function, version).await?.is_none() {
            return Err(function_not_found(state, function, Some(version)).into());
        }
    }
    Ok(())
}

pub async fn create(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let request: CreateAlias = parse_body(&body)?;
    let name = FunctionRef::parse(&function, &state.account)?.unqualified()?;
    let alias = Alias::create(request)?;
    retrying!({
        let (_, generation) = load(&state, &name).await?;
        if state.store.alias(&name, &alias.name).await?.is_some() {
            return Err(Error::conflict(format!(
                "Alias already exists: {}",
                state.account.qualified_arn(&name, &alias.name)
            ))
            .into());
        }
        check_versions(&state, &name, &alias).await?;
        let changes = vec![Change::PutAlias(alias.clone())];
        state
            .store
            .commit(&name, Expect::Generation(generation), changes)
            .await?;
        Ok(())
    })?;
    Ok(json(
        StatusCode::CREATED,
        render::alias(&alias, &name, &state.account),
    ))
}

pub async fn get(
    State(state): State<SharedState>,
    Path((function, alias)): Path<(String, String)>,
) -> ApiResult<Response> {
    let name = FunctionRef::parse(&function, &state.account)?.unqualified()?;
    load(&state, &name).await?;
    let alias = state
        .store
        .alias(&name, &alias)
        .await?
        .ok_or_else(|| alias_not_found(&state, &name, &alias))?;
    Ok(json(
        StatusCode::OK,
        render::alias(&alias, &name, &state.account),
    ))
}

pub async fn update(
    State(state): State<SharedState>,
    Path((function, alias_name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let request: UpdateAlias = parse_body(&body)?;
    let name = FunctionRef::parse(&function, &state.account)?.unqualified()?;
    let alias = retrying!({
        let (_, generation) = load(&state, &name).await?;
        let mut alias = state
            .store
            .alias(&name, &alias_name)
            .await?
            .ok_or_else(|| alias_not_found(&state, &name, &alias_name))?;
        check_revision(request.revision_id.as_deref(), &alias.revision_id)?;
        alias.update(request.clone())?;
        check_versions(&state, &name, &alias).await?;
        let changes = vec![Change::PutAlias(alias.clone())];
        state
            .store
            .commit(&name, Expect::Generation(generation), changes)
            .await?;
        Ok(alias)
    })?;
    Ok(json(
        StatusCode::OK,
        render::alias(&alias, &name, &state.account),
    ))
}

/// DeleteAlias. An alias that does not exist is already deleted: Lambda answers `204` for it.
pub async fn delete(
    State(state): State<SharedState>,
    Path((function, alias)): Path<(String, String)>,
) -> ApiResult<Response> {
    let name = FunctionRef::parse(&function, &state.account)?.unqualified()?;
    retrying!({
        let (_, generation) = load(&state, &name).await?;
        if state.store.alias(&name, &alias).await?.is_none() {
            return Ok(());
        }
        let changes = vec![
            Change::DeleteAlias(alias.clone()),
            Change::DeletePolicy(alias.clone()),
            Change::DeleteProvisioned(alias.clone()),
            Change::DeleteUrl(Some(alias.clone())),
            Change::DeleteEventInvokeConfig(alias.clone()),
        ];
        state
            .store
            .commit(&name, Expect::Generation(generation), changes)
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
    let name = FunctionRef::parse(&function, &state.account)?.unqualified()?;
    load(&state, &name).await?;
    let limit = max_items(&query)?;
    let version = query.get("FunctionVersion").filter(|v| !v.is_empty());
    let marker = query.get("Marker").filter(|m| !m.is_empty());
    let aliases: Vec<Alias> = state
        .store
        .aliases(&name)
        .await?
        .into_iter()
        .filter(|a| version.is_none_or(|v| a.versions().any(|av| av == v)))
        .filter(|a| marker.is_none_or(|m| a.name.as_str() > m))
        .collect();
    let page = &aliases[..aliases.len().min(limit)];
    let mut out = json!({
        "Aliases": page.iter().map(|a| render::alias(a, &name, &state.account)).collect::<Vec<_>>(),
    });
    if aliases.len() > limit {
        out["NextMarker"] = json!(page[limit - 1].name);
    }
    Ok(json(StatusCode::OK, out))
}
