//! One behavioural suite every [`QueueStore`] backend must pass: SQS's semantics as the queue
//! API and the asynchronous dispatcher rely on them. Times are passed in, so it needs no clock.

use crate::queue::{Counts, NewMessage, QueueSettings, QueueStore, Receipt, Redrive};

/// The suite; today run against SQLite in memory and on disk.
pub async fn suite(engine: &dyn QueueStore) {
    queue(engine, "q", |s| s.visibility_timeout = 10).await;
    assert!(
        !engine
            .create_queue("q", QueueSettings::new(0))
            .await
            .unwrap(),
        "it exists"
    );
    assert_eq!(engine.queues("").await.unwrap(), ["q"]);
    assert!(
        engine
            .send("nope", vec![message("x")], 0)
            .await
            .unwrap()
            .is_none()
    );

    // Visibility: a received message is invisible until its timeout passes.
    let ids = engine
        .send("q", vec![message("a"), message("b")], 1_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids.len(), 2);
    let got = engine.receive("q", 10, None, 1_000).await.unwrap().unwrap();
    assert_eq!(
        got.iter().map(|m| m.body.clone()).collect::<Vec<_>>(),
        [b"a".to_vec(), b"b".to_vec()]
    );
    assert!(
        engine
            .receive("q", 10, None, 5_000)
            .await
            .unwrap()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        engine.counts("q", 5_000).await.unwrap(),
        Counts {
            visible: 0,
            in_flight: 2,
            delayed: 0
        }
    );
    let again = engine
        .receive("q", 10, None, 11_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.len(), again[0].receive_count), (2, 2));
    // While a message is in flight, the handle of an earlier delivery still changes its
    // visibility (as in SQS); once it is visible again, no handle does.
    assert_eq!(
        engine
            .change_visibility("q", &got[0].receipt, 20, 11_000)
            .await
            .unwrap(),
        Receipt::Done
    );
    assert_eq!(
        engine
            .change_visibility("q", &got[1].receipt, 0, 11_000)
            .await
            .unwrap(),
        Receipt::Done
    );
    assert_eq!(
        engine
            .change_visibility("q", &got[1].receipt, 5, 11_000)
            .await
            .unwrap(),
        Receipt::Stale,
        "released: no longer in flight"
    );
    let again = [
        again[0].clone(),
        engine
            .receive("q", 10, None, 11_000)
            .await
            .unwrap()
            .unwrap()
            .remove(0),
    ];
    assert_eq!(again[1].receive_count, 3);
    // An old receipt no longer deletes; the newest does.
    assert_eq!(
        engine.delete("q", &got[0].receipt).await.unwrap(),
        Receipt::Stale
    );
    assert_eq!(
        engine.delete("q", &again[0].receipt).await.unwrap(),
        Receipt::Done
    );
    assert_eq!(
        engine.delete("q", "garbage").await.unwrap(),
        Receipt::Invalid
    );
    // Rescheduling a delivery hands it back with new attributes (here with no delay).
    assert_eq!(
        engine
            .reschedule("q", &again[1].receipt, 0, "{\"n\":1}".into(), 12_000)
            .await
            .unwrap(),
        Receipt::Done
    );
    let b = engine
        .receive("q", 10, None, 12_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            b[0].body.as_slice(),
            b[0].attributes.as_str(),
            b[0].receive_count
        ),
        (b"b".as_slice(), "{\"n\":1}", 4)
    );

    // Delays and retention.
    queue(engine, "slow", |s| {
        s.delay = 5;
        s.retention = 60;
    })
    .await;
    engine
        .send("slow", vec![message("later")], 0)
        .await
        .unwrap();
    assert!(
        engine
            .receive("slow", 10, None, 4_000)
            .await
            .unwrap()
            .unwrap()
            .is_empty()
    );
    assert_eq!(engine.counts("slow", 4_000).await.unwrap().delayed, 1);
    assert_eq!(
        engine
            .receive("slow", 10, None, 5_000)
            .await
            .unwrap()
            .unwrap()
            .len(),
        1
    );
    engine
        .send(
            "slow",
            vec![NewMessage {
                delay: Some(0),
                ..message("now")
            }],
            10_000,
        )
        .await
        .unwrap();
    assert_eq!(engine.expire(70_001).await.unwrap(), 2);
    assert_eq!(
        engine.counts("slow", 70_001).await.unwrap(),
        Counts::default()
    );

    // Redrive: received twice, the third attempt moves it to the dead-letter queue.
    queue(engine, "dlq", |_| {}).await;
    queue(engine, "src", |s| {
        s.visibility_timeout = 1;
        s.redrive = Some(Redrive {
            dead_letter_queue: "dlq".into(),
            max_receive_count: 2,
        });
    })
    .await;
    engine
        .send("src", vec![message("poison")], 0)
        .await
        .unwrap();
    for at in [0, 2_000] {
        assert_eq!(
            engine
                .receive("src", 1, None, at)
                .await
                .unwrap()
                .unwrap()
                .len(),
            1
        );
    }
    assert!(
        engine
            .receive("src", 1, None, 4_000)
            .await
            .unwrap()
            .unwrap()
            .is_empty()
    );
    let dead = engine
        .receive("dlq", 1, None, 4_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            dead[0].body.as_slice(),
            dead[0].dead_letter_source.as_deref(),
            dead[0].receive_count,
        ),
        (b"poison".as_slice(), Some("src"), 3),
        "the receive count goes on in the dead-letter queue"
    );

    // A consumer that died: its leases come back ("b" is still leased from before), but a
    // delivery it rescheduled keeps its delay.
    engine
        .send("q", vec![message("leased"), message("later")], 20_000)
        .await
        .unwrap();
    let held = engine
        .receive("q", 10, Some(600), 20_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.len(), 2);
    assert_eq!(
        engine
            .reschedule("q", &held[1].receipt, 100, "{}".into(), 20_000)
            .await
            .unwrap(),
        Receipt::Done
    );
    assert_eq!(engine.release_leases("q", 21_000).await.unwrap(), 2);
    assert_eq!(
        engine
            .receive("q", 10, None, 21_000)
            .await
            .unwrap()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(engine.counts("q", 21_000).await.unwrap().delayed, 1);
    let later = engine
        .receive("q", 10, None, 120_000)
        .await
        .unwrap()
        .unwrap();
    let later = later.iter().find(|m| m.body == b"later").unwrap();
    assert_eq!(later.receive_count, 2);

    assert!(engine.purge("q").await.unwrap());
    assert_eq!(engine.counts("q", 21_000).await.unwrap(), Counts::default());
    assert!(engine.delete_queue("q").await.unwrap());
    assert!(engine.queue("q").await.unwrap().is_none());
}

pub fn message(body: &str) -> NewMessage {
    NewMessage {
        body: body.as_bytes().to_vec(),
        attributes: "{}".into(),
        delay: None,
    }
}

pub async fn queue(engine: &dyn QueueStore, name: &str, change: impl FnOnce(&mut QueueSettings)) {
    let mut settings = QueueSettings::new(0);
    change(&mut settings);
    assert!(engine.create_queue(name, settings).await.unwrap());
}
