//! clusterList, brokerStatus, getBrokerConfig, updateBrokerConfig.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use thruster_protocol::body::{decode_lenient, KvTable};
use thruster_protocol::header::EmptyHeader;
use thruster_protocol::{request_code as rc, RemotingCommand};

use crate::namesrv::{targets, NameServers};
use crate::output::{Output, Table};
use crate::remote::Remote;
use crate::{AdminError, Target};

/// GET_BROKER_RUNTIME_INFO of the broker at `addr`.
pub fn runtime_info(addr: &str) -> Result<BTreeMap<String, String>, AdminError> {
    let request = RemotingCommand::request(rc::GET_BROKER_RUNTIME_INFO, &EmptyHeader {});
    let response = Remote::connect(addr)?.call(request, "runtime info")?;
    Ok(decode_lenient::<KvTable>("runtime info", &response.body)?.table)
}

/// The first of a TPS triple (`"10s 1min 10min"`), as mqadmin shows it.
fn first_tps(info: &BTreeMap<String, String>, key: &str) -> f64 {
    info.get(key)
        .and_then(|v| v.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn count(info: &BTreeMap<String, String>, key: &str) -> i64 {
    info.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub fn cluster_list(ns: &NameServers, only: Option<&str>) -> Result<Output, AdminError> {
    let info = ns.cluster_info()?;
    let mut table = Table::new(&[
        "#Cluster Name",
        "#Broker Name",
        "#BID",
        "#Addr",
        "#Version",
        "#InTPS",
        "#OutTPS",
        "#InTotalToday",
        "#OutTotalToday",
        "#PCWait(ms)",
        "#SPACE",
    ]);
    let mut rows = Vec::new();
    for (cluster, names) in &info.cluster_addr_table {
        if only.is_some_and(|c| c != cluster) {
            continue;
        }
        for name in names {
            let Some(broker) = info.broker_addr_table.get(name) else {
                continue;
            };
            for (id, addr) in &broker.broker_addrs {
                let runtime = runtime_info(addr);
                let (version, in_tps, out_tps, in_today, out_today, wait, space) = match &runtime {
                    Ok(r) => (
                        r.get("brokerVersionDesc").cloned().unwrap_or_default(),
                        first_tps(r, "putTps"),
                        first_tps(r, "getTransferedTps"),
                        count(r, "msgPutTotalTodayNow") - count(r, "msgPutTotalTodayMorning"),
                        count(r, "msgGetTotalTodayNow") - count(r, "msgGetTotalTodayMorning"),
                        count(r, "pageCacheLockTimeMills"),
                        r.get("commitLogDiskRatio")
                            .and_then(|v| v.parse::<f64>().ok())
                            .unwrap_or(-1.0),
                    ),
                    Err(_) => ("unreachable".into(), 0.0, 0.0, 0, 0, 0, -1.0),
                };
                table.row(vec![
                    cluster.clone(),
                    name.clone(),
                    id.to_string(),
                    addr.clone(),
                    version.clone(),
                    format!("{in_tps:.2}"),
                    format!("{out_tps:.2}"),
                    in_today.to_string(),
                    out_today.to_string(),
                    wait.to_string(),
                    format!("{:.4}", space),
                ]);
                rows.push(json!({
                    "cluster": cluster, "brokerName": name, "brokerId": id, "addr": addr,
                    "version": version, "inTps": in_tps, "outTps": out_tps,
                    "inTotalToday": in_today, "outTotalToday": out_today,
                    "pageCacheWaitMs": wait, "commitLogDiskRatio": space,
                    "reachable": runtime.is_ok(),
                }));
            }
        }
    }
    Ok(Output::table(table, Value::Array(rows)))
}

pub fn broker_status(
    ns: &Result<NameServers, AdminError>,
    target: &Target,
) -> Result<Output, AdminError> {
    let mut text = String::new();
    let mut all = serde_json::Map::new();
    for (name, addr) in targets(ns, target)? {
        let info = runtime_info(&addr)?;
        let width = info.keys().map(String::len).max().unwrap_or(0);
        for (key, value) in &info {
            text.push_str(&format!("{name:<16} {key:<width$} : {value}\n"));
        }
        all.insert(addr, json!(info));
    }
    Ok(Output::text(text, Value::Object(all)))
}

pub fn get_broker_config(
    ns: &Result<NameServers, AdminError>,
    target: &Target,
) -> Result<Output, AdminError> {
    let mut text = String::new();
    let mut all = serde_json::Map::new();
    for (name, addr) in targets(ns, target)? {
        let request = RemotingCommand::request(rc::GET_BROKER_CONFIG, &EmptyHeader {});
        let response = Remote::connect(&addr)?.call(request, "broker config")?;
        let body = String::from_utf8_lossy(&response.body).into_owned();
        let mut pairs = BTreeMap::new();
        text.push_str(&format!("============{name}============\n"));
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            if let Some((key, value)) = line.split_once('=') {
                text.push_str(&format!("{key:<40} =  {value}\n"));
                pairs.insert(key.to_owned(), value.to_owned());
            }
        }
        all.insert(addr, json!(pairs));
    }
    Ok(Output::text(text, Value::Object(all)))
}

pub fn update_broker_config(
    ns: &Result<NameServers, AdminError>,
    target: &Target,
    key: &str,
    value: &str,
) -> Result<Output, AdminError> {
    let mut text = String::new();
    let mut updated = Vec::new();
    for (_, addr) in targets(ns, target)? {
        let request = RemotingCommand::request(rc::UPDATE_BROKER_CONFIG, &EmptyHeader {})
            .with_body(format!("{key}={value}\n").into_bytes());
        Remote::connect(&addr)?.call(request, "updating the broker config")?;
        text.push_str(&format!("update broker config success, {addr}\n"));
        updated.push(addr);
    }
    Ok(Output::text(
        text,
        json!({ "updated": updated, "key": key, "value": value }),
    ))
}
