//! One behavioural suite every [`MetadataStore`] backend must pass.

use lamina_core::concurrency::{Allocation, ProvisionedConfig};
use lamina_core::event_invoke::EventInvokeConfig;
use lamina_core::function::{Alias, CodeRef, Function, Logging, Version};
use lamina_core::policy::Policy;
use lamina_core::url::{AuthType, InvokeMode, UrlConfig};

use crate::{Change, Expect, MetadataStore, StoreError, VersionCursor};

fn function(name: &str) -> Function {
    Function {
        name: name.into(),
        tags: Default::default(),
        reserved_concurrency: None,
        last_published: 0,
        recursive_loop: Default::default(),
    }
}

fn version(function: &str, version: &str, sha: &str) -> Version {
    Version {
        function_name: function.into(),
        version: version.into(),
        runtime: "python3.11".into(),
        role: "arn:aws:iam::000000000000:role/r".into(),
        handler: "index.handler".into(),
        description: String::new(),
        timeout: 3,
        memory_size: 128,
        environment: None,
        ephemeral_storage: 512,
        architectures: vec!["x86_64".into()],
        layers: vec![],
        dead_letter_target: None,
        tracing_mode: "PassThrough".into(),
        kms_key_arn: None,
        logging: Logging {
            log_format: "Text".into(),
            application_log_level: None,
            system_log_level: None,
            log_group: format!("/aws/lambda/{function}"),
        },
        code: CodeRef {
            sha256: sha.into(),
            size: 100,
            unzipped_size: 200,
        },
        last_modified: "2024-01-01T00:00:00.000+0000".into(),
        revision_id: "r".into(),
    }
}

async fn create(store: &dyn MetadataStore, name: &str) {
    store
        .commit(
            name,
            Expect::Absent,
            vec![
                Change::PutFunction(function(name)),
                Change::PutVersion(version(name, "$LATEST", "aa")),
            ],
        )
        .await
        .unwrap();
}

pub async fn suite(store: &dyn MetadataStore) {
    create(store, "b").await;
    create(store, "a").await;
    assert!(matches!(
        store
            .commit(
                "a",
                Expect::Absent,
                vec![Change::PutFunction(function("a"))]
            )
            .await,
        Err(StoreError::AlreadyExists)
    ));

    // Generations guard every write.
    let (_, generation) = store.function("a").await.unwrap().unwrap();
    let mut record = function("a");
    record.last_published = 1;
    store
        .commit(
            "a",
            Expect::Generation(generation),
            vec![
                Change::PutFunction(record.clone()),
                Change::PutVersion(version("a", "1", "bb")),
            ],
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .commit("a", Expect::Generation(generation), vec![])
            .await,
        Err(StoreError::Conflict)
    ));
    assert!(matches!(
        store.commit("missing", Expect::Generation(0), vec![]).await,
        Err(StoreError::Conflict)
    ));
    let (stored, next) = store.function("a").await.unwrap().unwrap();
    assert_eq!((stored, next), (record, generation + 1));

    // Versions: $LATEST first, then by number; lookups by name.
    let versions: Vec<String> = store
        .versions("a")
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(versions, ["$LATEST", "1"]);
    assert_eq!(
        store.version("a", "1").await.unwrap().unwrap().code.sha256,
        "bb"
    );
    assert!(store.version("a", "2").await.unwrap().is_none());
    assert!(store.version("a", "live").await.unwrap().is_none());

    // Pages across functions.
    let page = store.versions_page(None, false, 2).await.unwrap();
    let names: Vec<_> = page
        .iter()
        .map(|v| (v.function_name.as_str(), v.version.as_str()))
        .collect();
    assert_eq!(names, [("a", "$LATEST"), ("a", "1")]);
    let cursor = VersionCursor {
        function: "a".into(),
        seq: 1,
    };
    let page = store.versions_page(Some(&cursor), false, 10).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].function_name, "b");
    let latest = store.versions_page(None, true, 10).await.unwrap();
    assert_eq!(latest.len(), 2);

    // Aliases and policies.
    let alias = Alias {
        name: "live".into(),
        function_version: "1".into(),
        description: String::new(),
        routing: Default::default(),
        revision_id: "x".into(),
    };
    let generation = store.function("a").await.unwrap().unwrap().1;
    let policy = Policy {
        statements: vec![serde_json::json!({"Sid": "s"})],
        revision_id: "p".into(),
    };
    store
        .commit(
            "a",
            Expect::Generation(generation),
            vec![
                Change::PutAlias(alias.clone()),
                Change::PutPolicy(String::new(), policy.clone()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(store.alias("a", "live").await.unwrap(), Some(alias.clone()));
    assert_eq!(store.aliases("a").await.unwrap(), vec![alias]);
    assert_eq!(store.policy("a", "").await.unwrap(), Some(policy));
    assert!(store.policy("a", "live").await.unwrap().is_none());

    // Provisioned concurrency and reservations: what each function holds.
    let provisioned = |qualifier: &str, requested| ProvisionedConfig {
        qualifier: qualifier.into(),
        requested,
        last_modified: "2024-01-01T00:00:00.000+0000".into(),
    };
    let generation = store.function("a").await.unwrap().unwrap().1;
    let mut reserved = function("a");
    reserved.reserved_concurrency = Some(7);
    store
        .commit(
            "a",
            Expect::Generation(generation),
            vec![
                Change::PutFunction(reserved),
                Change::PutProvisioned(provisioned("live", 2)),
                Change::PutProvisioned(provisioned("1", 3)),
                Change::PutProvisioned(provisioned("1", 4)),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        store.provisioned("a").await.unwrap(),
        vec![provisioned("1", 4), provisioned("live", 2)]
    );
    assert_eq!(
        store.allocations().await.unwrap(),
        vec![Allocation {
            function: "a".into(),
            reserved: Some(7),
            provisioned: 6
        }]
    );
    let generation = store.function("a").await.unwrap().unwrap().1;
    store
        .commit(
            "a",
            Expect::Generation(generation),
            vec![Change::DeleteProvisioned("1".into())],
        )
        .await
        .unwrap();
    assert_eq!(
        store.provisioned("a").await.unwrap(),
        vec![provisioned("live", 2)]
    );

    // URL configurations: one per function and per alias, found again by their id.
    let url = |qualifier: Option<&str>, id: &str| UrlConfig {
        url_id: id.into(),
        qualifier: qualifier.map(Into::into),
        auth_type: AuthType::None,
        cors: None,
        invoke_mode: InvokeMode::Buffered,
        creation_time: "t".into(),
        last_modified_time: "t".into(),
    };
    let generation = store.function("a").await.unwrap().unwrap().1;
    store
        .commit(
            "a",
            Expect::Generation(generation),
            vec![
                Change::PutUrl(url(None, "id-plain")),
                Change::PutUrl(url(Some("live"), "id-live")),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        store.url("a", None).await.unwrap(),
        Some(url(None, "id-plain"))
    );
    assert_eq!(
        store.url("a", Some("live")).await.unwrap(),
        Some(url(Some("live"), "id-live"))
    );
    assert_eq!(store.urls("a").await.unwrap().len(), 2);
    assert_eq!(
        store.url_by_id("id-live").await.unwrap(),
        Some(("a".to_string(), url(Some("live"), "id-live")))
    );
    assert!(store.url_by_id("nope").await.unwrap().is_none());
    let generation = store.function("a").await.unwrap().unwrap().1;
    store
        .commit(
            "a",
            Expect::Generation(generation),
            vec![Change::DeleteUrl(Some("live".into()))],
        )
        .await
        .unwrap();
    assert!(store.url_by_id("id-live").await.unwrap().is_none());

    // Asynchronous invocation configurations, per qualifier.
    let event_config = |qualifier: &str, retries: u32| EventInvokeConfig {
        qualifier: qualifier.into(),
        maximum_retry_attempts: Some(retries),
        maximum_event_age: None,
        on_success: None,
        on_failure: Some("arn:aws:sqs:us-east-1:000000000000:dlq".into()),
        last_modified: 1.5,
    };
    let generation = store.function("a").await.unwrap().unwrap().1;
    store
        .commit(
            "a",
            Expect::Generation(generation),
            vec![
                Change::PutEventInvokeConfig(event_config("live", 1)),
                Change::PutEventInvokeConfig(event_config("$LATEST", 0)),
                Change::PutEventInvokeConfig(event_config("$LATEST", 2)),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        store.event_invoke_config("a", "$LATEST").await.unwrap(),
        Some(event_config("$LATEST", 2))
    );
    assert_eq!(store.event_invoke_configs("a").await.unwrap().len(), 2);
    let generation = store.function("a").await.unwrap().unwrap().1;
    store
        .commit(
            "a",
            Expect::Generation(generation),
            vec![Change::DeleteEventInvokeConfig("live".into())],
        )
        .await
        .unwrap();
    assert!(
        store
            .event_invoke_config("a", "live")
            .await
            .unwrap()
            .is_none()
    );

    // Usage and code references.
    let usage = store.usage().await.unwrap();
    assert_eq!((usage.function_count, usage.total_code_size), (2, 300));
    assert_eq!(
        store.code_in_use().await.unwrap(),
        ["aa".to_string(), "bb".to_string()].into()
    );

    // Deleting a function takes everything of it along.
    let generation = store.function("a").await.unwrap().unwrap().1;
    store
        .commit(
            "a",
            Expect::Generation(generation),
            vec![Change::DeleteFunction],
        )
        .await
        .unwrap();
    assert!(store.function("a").await.unwrap().is_none());
    assert!(store.versions("a").await.unwrap().is_empty());
    assert!(store.aliases("a").await.unwrap().is_empty());
    assert!(store.policy("a", "").await.unwrap().is_none());
    assert!(store.provisioned("a").await.unwrap().is_empty());
    assert!(store.allocations().await.unwrap().is_empty());
    assert!(store.url_by_id("id-plain").await.unwrap().is_none());
    assert!(store.event_invoke_configs("a").await.unwrap().is_empty());
    assert_eq!(
        store.code_in_use().await.unwrap(),
        ["aa".to_string()].into()
    );

    // A failed commit changes nothing.
    let generation = store.function("b").await.unwrap().unwrap().1;
    let result = store
        .commit(
            "b",
            Expect::Generation(generation + 5),
            vec![Change::DeleteFunction],
        )
        .await;
    assert!(result.is_err());
    assert!(store.function("b").await.unwrap().is_some());
}

#[tokio::test]
async fn sqlite_in_memory_conforms() {
    suite(&crate::SqliteStore::in_memory().unwrap()).await;
}

#[tokio::test]
async fn sqlite_on_disk_conforms_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    suite(&crate::SqliteStore::open(&path).unwrap()).await;
    let reopened = crate::SqliteStore::open(&path).unwrap();
    assert!(reopened.function("b").await.unwrap().is_some());
    assert!(reopened.function("a").await.unwrap().is_none());
}
