//! Functions and versions: Create/Get/List/Update/Delete function, PublishVersion,
//! ListVersionsByFunction.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use lamina_core::arn::{FunctionRef, LATEST, NameShape};
use lamina_core::function::{
    CodeRef, CreateFunction, Function, PublishVersion, UpdateFunctionCode,
    UpdateFunctionConfiguration, Version, new_revision_id,
};
use lamina_core::time::{lambda_timestamp, now};
use lamina_core::{Error, validate};
use lamina_store::{Change, Expect, StoreError, VersionCursor, version_seq};
use serde_json::json;

use super::{code_location, render};
use crate::retrying;
use crate::{ApiResult, ApiState, QueryPairs, SharedState, json, max_items, parse_body};

pub(crate) fn function_not_found(state: &ApiState, name: &str, qualifier: Option<&str>) -> Error {
    let arn = match qualifier {
        Some(q) => state.account.qualified_arn(name, q),
        None => state.account.function_arn(name),
    };
    Error::not_found(format!("Function not found: {arn}"))
}

/// The function and its generation, or ResourceNotFoundException.
pub(crate) async fn load(state: &ApiState, name: &str) -> ApiResult<(Function, u64)> {
    state
        .store
        .function(name)
        .await?
        .ok_or_else(|| function_not_found(state, name, None).into())
}

/// The version a qualifier names: `$LATEST` (or none), a number, or an alias's primary version.
pub(crate) async fn resolve_version(
    state: &ApiState,
    function: &FunctionRef,
) -> ApiResult<Version> {
    let name = &function.name;
    let qualifier = function.qualifier.as_deref();
    let version = match qualifier {
        None => LATEST.to_owned(),
        Some(q) if q == LATEST || q.bytes().all(|b| b.is_ascii_digit()) => q.to_owned(),
        Some(alias) => match state.store.alias(name, alias).await? {
            Some(alias) => alias.function_version,
            None => return Err(function_not_found(state, name, qualifier).into()),
        },
    };
    state
        .store
        .version(name, &version)
        .await?
        .ok_or_else(|| function_not_found(state, name, qualifier).into())
}

pub(crate) fn check_revision(expected: Option<&str>, actual: &str) -> ApiResult<()> {
    match expected {
        Some(expected) if !expected.is_empty() && expected != actual => {
            Err(Error::stale_revision().into())
        }
        _ => Ok(()),
    }
}

/// Layers a version references must exist. Lamina has no layers yet, so any reference is one to
/// a layer version that does not exist, answered as Lambda answers it.
fn check_layers_exist(version: &Version) -> ApiResult<()> {
    match version.layers.first() {
        None => Ok(()),
        Some(layer) => {
            Err(Error::invalid_parameter(format!("Layer version {layer} does not exist.")).into())
        }
    }
}

/// Validates, unpacks and durably stores a package, off the async workers.
async fn store_code(state: &ApiState, zip: Vec<u8>) -> ApiResult<CodeRef> {
    let code = state.code.clone();
    let stored = tokio::task::spawn_blocking(move || code.put(&zip))
        .await
        .map_err(|e| Error::service(format!("storing code: {e}")))??;
    Ok(stored)
}

/// Publishes `latest` as the function's next version, unless the newest published version
/// already has the same code and configuration: then that one is the answer, as in Lambda.
async fn publish(
    state: &ApiState,
    function: &mut Function,
    latest: &Version,
    description: Option<String>,
    changes: &mut Vec<Change>,
) -> ApiResult<Version> {
    let versions = state.store.versions(&function.name).await?;
    if let Some(newest) = versions.iter().rev().find(|v| !v.is_latest())
        && latest.same_content_as(newest)
    {
        return Ok(newest.clone());
    }
    function.last_published += 1;
    let version = latest.publish(function.last_published, description, now());
    changes.push(Change::PutFunction(function.clone()));
    changes.push(Change::PutVersion(version.clone()));
    Ok(version)
}

pub async fn create(State(state): State<SharedState>, body: Bytes) -> ApiResult<Response> {
    let request: CreateFunction = parse_body(&body)?;
    let name = FunctionRef::parse(&request.function_name, &state.account)?.unqualified()?;
    // The model allows 140 characters for the ARN forms; the name itself has 64, and Lambda
    // reports that as a product limit.
    if name.len() > 64 {
        return Err(Error::invalid_parameter(format!(
            "1 validation error detected: Value '{name}' at 'functionName' failed to satisfy \
             constraint: Member must have length less than or equal to 64"
        ))
        .into());
    }
    request.precheck()?;
    let zip = request.code.zip_bytes()?;
    let publish_first = request.publish;
    let tags = request.tags.clone().unwrap_or_default();
    // Everything but the code is checked before the package is unpacked and stored.
    let placeholder = CodeRef {
        sha256: String::new(),
        size: 0,
        unzipped_size: 0,
    };
    let mut latest = request.latest_version(&name, placeholder, &state.runtimes, now())?;
    check_layers_exist(&latest)?;
    latest.code = store_code(&state, zip).await?;

    let mut function = Function {
        name: name.clone(),
        tags,
        reserved_concurrency: None,
        last_published: 0,
        recursive_loop: Default::default(),
    };
    let mut shown = latest.clone();
    let mut versions = vec![Change::PutVersion(latest.clone())];
    if publish_first {
        function.last_published = 1;
        shown = latest.publish(1, None, now());
        versions.push(Change::PutVersion(shown.clone()));
    }
    let mut changes = vec![Change::PutFunction(function)];
    changes.extend(versions);
    match state.store.commit(&name, Expect::Absent, changes).await {
        Ok(()) => {}
        Err(StoreError::AlreadyExists) => {
            return Err(Error::conflict(format!("Function already exist: {name}")).into());
        }
        Err(err) => return Err(err.into()),
    }
    tracing::info!(function = %name, code = %shown.code.sha256, "function created");
    Ok(json(
        StatusCode::CREATED,
        render::configuration(&shown, &state.account, None),
    ))
}

pub async fn get(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let function =
        FunctionRef::parse_with_qualifier(&function, query.get("Qualifier"), &state.account)?;
    let (record, _) = load(&state, &function.name).await?;
    let version = resolve_version(&state, &function).await?;
    let mut out = json!({
        "Configuration": render::configuration(&version, &state.account, function.qualifier.as_deref()),
        "Code": {
            "RepositoryType": "S3",
            "Location": code_location::url(&state, &headers, &version.code.sha256),
        },
    });
    if !record.tags.is_empty() {
        out["Tags"] = json!(record.tags);
    }
    if let Some(reserved) = record.reserved_concurrency {
        out["Concurrency"] = json!({ "ReservedConcurrentExecutions": reserved });
    }
    Ok(json(StatusCode::OK, out))
}

pub async fn get_configuration(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
) -> ApiResult<Response> {
    let function =
        FunctionRef::parse_with_qualifier(&function, query.get("Qualifier"), &state.account)?;
    let version = resolve_version(&state, &function).await?;
    let out = render::configuration(&version, &state.account, function.qualifier.as_deref());
    Ok(json(StatusCode::OK, out))
}

fn parse_marker(marker: Option<&str>) -> ApiResult<Option<VersionCursor>> {
    let Some(marker) = marker.filter(|m| !m.is_empty()) else {
        return Ok(None);
    };
    let parsed = marker.rsplit_once(':').and_then(|(function, seq)| {
        Some(VersionCursor {
            function: function.into(),
            seq: seq.parse().ok()?,
        })
    });
    parsed
        .map(Some)
        .ok_or_else(|| Error::invalid_parameter(format!("Invalid Marker: {marker}")).into())
}

pub async fn list(
    State(state): State<SharedState>,
    Query(query): Query<QueryPairs>,
) -> ApiResult<Response> {
    let all = match query.get("FunctionVersion") {
        None | Some("") => false,
        Some("ALL") => true,
        Some(other) => {
            return Err(Error::validation(format!(
                "1 validation error detected: Value '{other}' at 'functionVersion' failed to \
                 satisfy constraint: Member must satisfy enum value set: [ALL]"
            ))
            .into());
        }
    };
    let limit = max_items(&query)?;
    let after = parse_marker(query.get("Marker"))?;
    let mut page = state
        .store
        .versions_page(after.as_ref(), !all, limit + 1)
        .await?;
    let next = (page.len() > limit).then(|| {
        page.truncate(limit);
        let last = page.last().expect("a full page");
        format!("{}:{}", last.function_name, version_seq(&last.version))
    });
    let functions: Vec<_> = page
        .iter()
        .map(|v| render::configuration(v, &state.account, all.then_some(v.version.as_str())))
        .collect();
    let mut out = json!({ "Functions": functions });
    if let Some(next) = next {
        out["NextMarker"] = json!(next);
    }
    Ok(json(StatusCode::OK, out))
}

pub async fn list_versions(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
) -> ApiResult<Response> {
    let name =
        FunctionRef::parse_as(&function, NameShape::Namespaced, &state.account)?.unqualified()?;
    load(&state, &name).await?;
    let limit = max_items(&query)?;
    let after = match query.get("Marker").filter(|m| !m.is_empty()) {
        None => None,
        Some(m) => Some(
            m.parse::<u64>()
                .map_err(|_| Error::invalid_parameter(format!("Invalid Marker: {m}")))?,
        ),
    };
    let versions: Vec<Version> = state
        .store
        .versions(&name)
        .await?
        .into_iter()
        .filter(|v| after.is_none_or(|after| version_seq(&v.version) > after && !v.is_latest()))
        .collect();
    let page = &versions[..versions.len().min(limit)];
    let mut out = json!({
        "Versions": page
            .iter()
            .map(|v| render::configuration(v, &state.account, Some(&v.version)))
            .collect::<Vec<_>>(),
    });
    if versions.len() > limit {
        out["NextMarker"] = json!(version_seq(&page[limit - 1].version).to_string());
    }
    Ok(json(StatusCode::OK, out))
}

pub async fn update_code(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let request: UpdateFunctionCode = parse_body(&body)?;
    let name = FunctionRef::parse(&function, &state.account)?.unqualified()?;
    load(&state, &name).await?;
    let architectures = match request.architectures.clone() {
        Some(list) => Some(validate::architectures(Some(list))?),
        None => None,
    };
    let code = store_code(&state, request.code.zip_bytes()?).await?;
    let shown = retrying!({
        let (mut record, generation) = load(&state, &name).await?;
        let mut latest = state
            .store
            .version(&name, LATEST)
            .await?
            .ok_or_else(|| function_not_found(&state, &name, None))?;
        check_revision(request.revision_id.as_deref(), &latest.revision_id)?;
        latest.code = code.clone();
        if let Some(architectures) = &architectures {
            latest.architectures = architectures.clone();
        }
        latest.last_modified = lambda_timestamp(now());
        latest.revision_id = new_revision_id();
        if request.dry_run {
            return Ok(latest);
        }
        let mut changes = vec![Change::PutVersion(latest.clone())];
        let shown = if request.publish {
            publish(&state, &mut record, &latest, None, &mut changes).await?
        } else {
            latest
        };
        state
            .store
            .commit(&name, Expect::Generation(generation), changes)
            .await?;
        Ok(shown)
    })?;
    let qualifier = (!shown.is_latest()).then_some(shown.version.as_str());
    Ok(json(
        StatusCode::OK,
        render::configuration(&shown, &state.account, qualifier),
    ))
}

pub async fn update_configuration(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let request: UpdateFunctionConfiguration = parse_body(&body)?;
    let name = FunctionRef::parse(&function, &state.account)?.unqualified()?;
    let latest = retrying!({
        let (_, generation) = load(&state, &name).await?;
        let mut latest = state
            .store
            .version(&name, LATEST)
            .await?
            .ok_or_else(|| function_not_found(&state, &name, None))?;
        check_revision(request.revision_id.as_deref(), &latest.revision_id)?;
        latest.apply(request.config.clone(), &state.runtimes)?;
        check_layers_exist(&latest)?;
        latest.last_modified = lambda_timestamp(now());
        latest.revision_id = new_revision_id();
        let changes = vec![Change::PutVersion(latest.clone())];
        state
            .store
            .commit(&name, Expect::Generation(generation), changes)
            .await?;
        Ok(latest)
    })?;
    Ok(json(
        StatusCode::OK,
        render::configuration(&latest, &state.account, None),
    ))
}

pub async fn publish_version(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let request: PublishVersion = parse_body(&body)?;
    let name = FunctionRef::parse(&function, &state.account)?.unqualified()?;
    let version = retrying!({
        let (mut record, generation) = load(&state, &name).await?;
        let latest = state
            .store
            .version(&name, LATEST)
            .await?
            .ok_or_else(|| function_not_found(&state, &name, None))?;
        if let Some(sha) = request.code_sha256.as_deref().filter(|s| !s.is_empty()) {
            let current = latest.code.code_sha256();
            if sha != current {
                return Err(Error::invalid_parameter(format!(
                    "CodeSHA256 ({sha}) is different from current CodeSHA256 in $LATEST \
                     ({current}). Please try again with the CodeSHA256 in $LATEST."
                ))
                .into());
            }
        }
        check_revision(request.revision_id.as_deref(), &latest.revision_id)?;
        let mut changes = Vec::new();
        let version = publish(
            &state,
            &mut record,
            &latest,
            request.description.clone(),
            &mut changes,
        )
        .await?;
        if !changes.is_empty() {
            state
                .store
                .commit(&name, Expect::Generation(generation), changes)
                .await?;
        }
        Ok(version)
    })?;
    let out = render::configuration(&version, &state.account, Some(&version.version));
    Ok(json(StatusCode::CREATED, out))
}

/// DeleteFunction. With a qualifier it deletes one version, and, as in Lambda, a version that
/// does not exist is already deleted: the answer is the same `204`.
pub async fn delete(
    State(state): State<SharedState>,
    Path(function): Path<String>,
    Query(query): Query<QueryPairs>,
) -> ApiResult<Response> {
    let function =
        FunctionRef::parse_with_qualifier(&function, query.get("Qualifier"), &state.account)?;
    let name = function.name.clone();
    // What the qualifier names is decided before the function is looked up, as Lambda does.
    let version = match function.qualifier.as_deref() {
        None => None,
        Some(LATEST) => {
            return Err(Error::invalid_parameter(
                "$LATEST version cannot be deleted without deleting the function.",
            )
            .into());
        }
        Some(alias) if validate::alias_name(alias).is_ok() => {
            return Err(Error::invalid_parameter(
                "Deletion of aliases is not currently supported.",
            )
            .into());
        }
        Some(version) => Some(version.to_owned()),
    };
    retrying!({
        let (_, generation) = load(&state, &name).await?;
        let changes = match version.as_deref() {
            None => vec![Change::DeleteFunction],
            Some(version) => {
                if state.store.version(&name, version).await?.is_none() {
                    return Ok(());
                }
                let users: Vec<String> = state
                    .store
                    .aliases(&name)
                    .await?
                    .into_iter()
                    .filter(|a| a.versions().any(|v| v == version))
                    .map(|a| a.name)
                    .collect();
                if !users.is_empty() {
                    return Err(Error::conflict(format!(
                        "Unable to delete version because the following aliases reference it: \
                         [{}]",
                        users.join(", ")
                    ))
                    .into());
                }
                vec![
                    Change::DeleteVersion(version.to_owned()),
                    Change::DeletePolicy(version.to_owned()),
                    Change::DeleteProvisioned(version.to_owned()),
                    Change::DeleteEventInvokeConfig(version.to_owned()),
                ]
            }
        };
        state
            .store
            .commit(&name, Expect::Generation(generation), changes)
            .await?;
        Ok(())
    })?;
    tracing::info!(function = %name, qualifier = ?function.qualifier, "function deleted");
    Ok(axum::response::IntoResponse::into_response(
        StatusCode::NO_CONTENT,
    ))
}
