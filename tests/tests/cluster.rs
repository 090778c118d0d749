//! Redis Cluster, against a real 6-node cluster (3 masters, 3 replicas) and
//! real hub processes: multi-node fan-out over sharded pub/sub, ids that
//! would break slot co-location, a shard down, a master SIGKILLed under load
//! and a live execution's slot migrated. The fault scenarios print
//! `FIGURE <name>: <value>` lines like the fault suite (`--nocapture`).

mod helpers;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use helpers::cluster::TestCluster;
use helpers::faults::{
    Delivered, Progress, Tally, acknowledged, all_publishers, caught_up_after, deliveries, figure,
    ms, one_at_a_time, spawn_paced_publisher, subscribe_from, subscribers, tally,
};
use helpers::ws::WsClient;
use helpers::{TestHub, TestRedis, assert_contiguous, within};
use serde_json::{Value, json};

/// A hub node on the cluster; appends wait for one replica, so an
/// acknowledged event survives a failover.
async fn node(cluster: &TestCluster) -> Result<TestHub> {
    TestHub::spawn(&[
        "--redis-cluster",
        &cluster.seeds(),
        "--redis-wait-replicas",
        "1",
    ])
    .await
}

/// The live channel of execution `id`.
fn channel(id: &str) -> String {
    format!("{{execution:{id}:events}}:live")
}

/// Reads `count` events from a subscribed connection, in order.
async fn seqs(ws: &mut WsClient, count: u64) -> Result<Vec<u64>> {
    let mut seqs = Vec::new();
    while seqs.len() < count as usize {
        if let exechub_protocol::ServerMsg::Event { event, .. } = ws.next_msg().await? {
            seqs.push(event.seq);
        }
    }
    Ok(seqs)
}

/// Subscribers on one node get what the other node publishes (single events
/// and a batch), for
/// executions on every shard, up to the end (`ended`, and the summary on
/// the other node); each shard holds the sharded subscriptions of its own
/// executions only, and `/health` shows every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_across_nodes_rides_each_executions_own_shard() -> Result<()> {
    let cluster = TestCluster::spawn().await?;
    let (a, b) = (node(&cluster).await?, node(&cluster).await?);
    let ids = cluster.ids_on_every_master("fanout", 1)?;
    let mut watchers = Vec::new();
    for id in &ids {
        let mut ws = a.ws().await?;
        subscribe_from(&mut ws, id, 0, None).await?;
        watchers.push(ws);
    }
    for id in &ids {
        for n in 0..20 {
            b.publish(id, "tick", json!({ "n": n })).await?;
        }
        // A batch travels as one sharded message.
        let events: Vec<Value> = (20..25)
            .map(|n| json!({ "event_type": "tick", "data": { "n": n } }))
            .collect();
        let response = b
            .http
            .post(format!("{}/batch", b.events_url(id)))
            .json(&json!({ "events": events }))
            .send()
            .await?;
        ensure!(response.status() == 202, "batch: {}", response.status());
    }
    for ws in &mut watchers {
        assert_contiguous(&within("20 events", seqs(ws, 20)).await??, 1, 20);
        for seq in 21..=25 {
            let event = ws.next_event().await?;
            ensure!(
                (event.seq, event.data.get("n")) == (seq, Some(&json!(seq - 1))),
                "batch event {seq}: {event:?}"
            );
        }
    }
    let masters = cluster.masters()?;
    for id in &ids {
        let owner = cluster.master_of(id)?;
        for master in &masters {
            let subscribed = cluster.shard_channels(*master)?.contains(&channel(id));
            assert_eq!(
                subscribed,
                *master == owner,
                "{id}: subscribed on {master}, owner {owner}"
            );
        }
    }
    // The end travels the same way: the terminal event, then `ended`.
    for (id, ws) in ids.iter().zip(&mut watchers) {
        b.publish(id, "execution_completed", json!({})).await?;
        assert_eq!(ws.next_event().await?.seq, 26);
        match ws.next_msg().await? {
            exechub_protocol::ServerMsg::Ended { status, seq, .. } => {
                assert_eq!((status.as_str(), seq), ("completed", 26));
            }
            other => anyhow::bail!("expected ended, got {other:?}"),
        }
        let summary: Value = a
            .http
            .get(a.url(&format!("/api/v1/executions/{id}")))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(summary["status"], "completed", "{summary}");
    }
    let health = a.health().await?;
    assert_eq!(health["store"]["backend"], "redis-cluster", "{health}");
    let shards = health["store"]["shards"].as_array().context("shards")?;
    assert_eq!(shards.len(), 3, "{health}");
    assert!(shards.iter().all(|s| s["ok"] == true), "{health}");
    Ok(())
}

/// `{` and `}` would move an execution's keys out of their shared slot: they
/// are refused alike on the embedded store, one Redis and a cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_with_hash_tag_braces_are_refused_on_every_backend() -> Result<()> {
    let (cluster, redis) = (TestCluster::spawn().await?, TestRedis::spawn().await?);
    let hubs = [
        TestHub::spawn(&[]).await?,
        TestHub::spawn(&["--redis-url", &redis.url()]).await?,
        node(&cluster).await?,
    ];
    for hub in &hubs {
        for id in ["a%7Bb%7D", "%7Bx", "y%7D"] {
            let response = hub
                .http
                .post(hub.events_url(id))
                .json(&json!({ "event_type": "t", "data": {} }))
                .send()
                .await?;
            assert_eq!(response.status(), 422, "POST {id}");
            let history = hub.http.get(hub.events_url(id)).send().await?;
            assert_eq!(history.status(), 422, "GET {id}");
        }
        // The same id without braces is fine.
        hub.publish("a-b", "t", json!({})).await?;
    }
    Ok(())
}

/// With a whole shard down (master and replica), its executions answer 503
/// and the others keep working; `/health` stays 200 and names the shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_down_fails_only_its_own_executions() -> Result<()> {
    let mut cluster = TestCluster::spawn().await?;
    let hub = node(&cluster).await?;
    let ids = cluster.ids_on_every_master("shard-down", 1)?;
    for id in &ids {
        hub.publish(id, "t", json!({})).await?;
    }
    let victim = cluster.master_of(&ids[0])?;
    let replica = cluster.replica_of(victim)?;
    cluster.kill(replica)?;
    cluster.kill(victim)?;
    let started = Instant::now();
    let refused = hub
        .http
        .post(hub.events_url(&ids[0]))
        .json(&json!({ "event_type": "t", "data": {} }))
        .send()
        .await?;
    assert_eq!(refused.status(), 503);
    ensure!(refused.headers().contains_key("retry-after"));
    figure("cluster_shard_down_503_after", ms(started.elapsed()));
    for id in &ids[1..] {
        hub.publish(id, "t", json!({})).await?;
        assert_eq!(
            hub.history(id, 0).await?["events"].as_array().map(Vec::len),
            Some(2)
        );
    }
    let health = hub
        .health_until("the shard to show as down", |h: &Value| {
            h["store"]["shards"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["ok"] == false))
        })
        .await?;
    assert_eq!(health["status"], "degraded", "{health}");
    let down: Vec<&Value> = health["store"]["shards"]
        .as_array()
        .context("shards")?
        .iter()
        .filter(|s| s["ok"] == false)
        .collect();
    assert_eq!(down.len(), 1, "{health}");
    assert_eq!(down[0]["master"], format!("127.0.0.1:{victim}"), "{health}");
    let status = hub.http.get(hub.url("/health")).send().await?.status();
    assert_eq!(
        status, 200,
        "a node serving the other shards stays in rotation"
    );
    Ok(())
}

/// A master is SIGKILLed under load (2 hub nodes, 4 publishers at 50
/// events/s each, 200 WebSocket subscribers over executions on every
/// shard); its replica is promoted. Every acknowledged event reaches every
/// subscriber of its execution exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_killed_under_load_loses_and_duplicates_nothing_acknowledged() -> Result<()> {
    const SUBSCRIBERS: usize = 200;
    const TOTAL: u64 = 300; // per execution: 6 s at 50 events/s each
    const PERIOD: Duration = Duration::from_millis(20);
    let _turn = one_at_a_time().await;
    let mut cluster = TestCluster::spawn().await?;
    let (a, b) = (node(&cluster).await?, node(&cluster).await?);
    // One execution per shard, and a second one on the shard that fails.
    let mut ids = cluster.ids_on_every_master("failover", 1)?;
    let victim = cluster.master_of(&ids[0])?;
    let extra = (0..)
        .map(|n| format!("failover-extra-{}-{n}", std::process::id()))
        .find(|id| cluster.master_of(id).is_ok_and(|m| m == victim))
        .context("an id on the victim shard")?;
    ids.push(extra);
    let readers: Vec<_> = subscribers([&a, &b], &ids, SUBSCRIBERS)
        .await?
        .into_iter()
        .map(|(i, ws)| (i, tokio::spawn(deliveries(ws, TOTAL))))
        .collect();
    let (publishers, mut progress): (Vec<_>, Vec<_>) = ids
        .iter()
        .enumerate()
        .map(|(j, id)| {
            let nodes = if j % 2 == 0 { [&a, &b] } else { [&b, &a] };
            let urls = nodes.map(|n| n.events_url(id)).to_vec();
            spawn_paced_publisher(a.http.clone(), urls, PERIOD, TOTAL)
        })
        .unzip();

    all_publishers(&mut progress, "first publishes", |p| p.acked >= 75).await?;
    let killed = Instant::now();
    cluster.kill(victim)?;
    cluster.wait_healthy().await?;
    let promoted = Instant::now();
    let refused: u32 = progress.iter().map(|p| p.borrow().refused).sum();

    let published = acknowledged(publishers, TOTAL).await?;
    let mut delivered: Vec<(usize, Delivered)> = Vec::new();
    for (i, reader) in readers {
        delivered.push((i, reader.await??));
    }
    figure("cluster_failover_promoted_after", ms(promoted - killed));
    figure("cluster_failover_publishes_refused_503", refused);
    let sum = tally("cluster_failover", &delivered, TOTAL);
    let caught_up = caught_up_after(&published, &delivered, killed)?;
    figure("cluster_failover_kill_to_backlog_delivered", ms(caught_up));
    assert_eq!(sum, Tally::default(), "every subscriber: 1..={TOTAL} once");
    assert!(
        caught_up < Duration::from_secs(15),
        "recovery took {caught_up:?}"
    );
    Ok(())
}

/// A live execution's slot moves to another master, key by key, while
/// subscribers on two nodes watch and a publisher with idempotency keys
/// keeps publishing through every phase (slot migrating, keys split, every
/// key moved, switched; the old master then ends the subscriptions). No gap,
/// no duplicate, and the subscriptions follow the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_migration_of_a_live_execution_loses_and_duplicates_nothing() -> Result<()> {
    const SUBSCRIBERS: usize = 20;
    const TOTAL: u64 = 300;
    const PERIOD: Duration = Duration::from_millis(20);
    let _turn = one_at_a_time().await;
    let cluster = TestCluster::spawn().await?;
    let (a, b) = (node(&cluster).await?, node(&cluster).await?);
    let ids = cluster.ids_on_every_master("migrate", 1)?;
    let id = ids[0].clone();
    let slot = cluster.slot(&format!("execution:{id}:events"))?;
    let from = cluster.master_of(&id)?;
    let to = cluster.master_of(&ids[1])?;
    let readers: Vec<_> = subscribers([&a, &b], std::slice::from_ref(&id), SUBSCRIBERS)
        .await?
        .into_iter()
        .map(|(i, ws)| (i, tokio::spawn(deliveries(ws, TOTAL))))
        .collect();
    let urls = vec![a.events_url(&id), b.events_url(&id)];
    let (publisher, mut progress) = spawn_paced_publisher(a.http.clone(), urls, PERIOD, TOTAL);
    // Waits until `acked` more publishes were acknowledged, or `refused`
    // more were answered 503.
    let mut publisher_past = async |acked: u64, refused: u32| {
        let now = *progress.borrow();
        let done =
            |p: &Progress| p.acked >= now.acked + acked || p.refused >= now.refused + refused;
        within("the publisher to go on", progress.wait_for(done)).await??;
        anyhow::Ok(())
    };

    publisher_past(30, u32::MAX).await?;
    let started = Instant::now();
    // While the slot migrates, Redis answers a script that would create a
    // key in it (each publish's idempotency record) with TRYAGAIN, or ASKs
    // for the new master once every key moved: publishes answer 503 and the
    // publisher retries until the switch.
    cluster.begin_migration(slot, from, to)?;
    publisher_past(10, 3).await?;
    while cluster.migrate_keys(slot, from, to, 1)? > 0 {}
    publisher_past(10, 3).await?;
    cluster.finish_migration(slot, from, to)?;
    let migrated = Instant::now();
    assert_eq!(cluster.master_of(&id)?, to);
    // The subscriptions follow the slot: only the new master holds them.
    within("the sharded subscriptions to move", async {
        loop {
            let holders: Vec<u16> = cluster
                .live_ports()
                .into_iter()
                .filter(|port| {
                    cluster
                        .shard_channels(*port)
                        .is_ok_and(|channels| channels.contains(&channel(&id)))
                })
                .collect();
            if holders == [to] {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
        }
    })
    .await?;
    let refused = progress.borrow().refused;
    let published = acknowledged(vec![publisher], TOTAL).await?;
    let mut delivered = Vec::new();
    for (i, reader) in readers {
        delivered.push((i, reader.await??));
    }
    figure("cluster_migration_duration", ms(migrated - started));
    figure("cluster_migration_publishes_refused_503", refused);
    let sum = tally("cluster_migration", &delivered, TOTAL);
    assert_eq!(sum, Tally::default(), "every subscriber: 1..={TOTAL} once");
    let caught_up = caught_up_after(&published, &delivered, migrated)?;
    figure("cluster_migration_to_backlog_delivered", ms(caught_up));
    Ok(())
}

/// `--redis-cluster` and `--redis-url` name different stores: both at once
/// is a start-up error, not a silent choice.
#[tokio::test]
async fn redis_cluster_and_redis_url_together_are_refused() -> Result<()> {
    let output = tokio::process::Command::new(helpers::hub_binary())
        .args(["--redis-url", "redis://127.0.0.1:9"])
        .args([
            "--redis-cluster",
            "redis://127.0.0.1:9,redis://127.0.0.1:10",
        ])
        .output()
        .await?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--redis-cluster"), "{stderr}");
    Ok(())
}
