//! Name server request handling: one synchronous handler per request code.

use std::cell::RefCell;

use thruster_protocol::body::route::JsonStyle;
use thruster_protocol::body::{
    self, DataVersion, KvTable, RegisterBrokerBody, TopicConfigSerializeWrapper, TopicRouteData,
};
use thruster_protocol::codes::version;
use thruster_protocol::header::admin::TopicRequestHeader;
use thruster_protocol::header::namesrv::*;
use thruster_protocol::{request_code as rc, response_code, CommandHeader, RemotingCommand};
use tracing::{info, warn};

use super::config::NamesrvConfig;
use super::kv_config::KvConfig;
use super::route_info::{BrokerAddrKey, Registration, RouteInfo};
use crate::remoting::{ConnectionContext, Failure, Reply, RequestProcessor};
use crate::runtime;

/// KV namespace holding `topic -> "brokerName:queueNum;..."` for ordered topics.
pub const ORDER_TOPIC_CONFIG: &str = "ORDER_TOPIC_CONFIG";

/// Appended to route misses, as Java's `FAQUrl.suggestTodo(APPLY_TOPIC_URL)` does.
const APPLY_TOPIC_SUGGESTION: &str =
    "\nSee http://rocketmq.apache.org/docs/faq/ for further details.";

pub struct NamesrvProcessor {
    pub routes: RefCell<RouteInfo>,
    pub kv: RefCell<KvConfig>,
    pub config: RefCell<NamesrvConfig>,
}

type Handled = Result<RemotingCommand, Failure>;

impl RequestProcessor for NamesrvProcessor {
    async fn process(
        &self,
        context: &ConnectionContext,
        request: RemotingCommand,
    ) -> Option<Reply> {
        let response = match self.handle(context, &request) {
            Ok(response) => response,
            Err(failure) => {
                if failure.code == response_code::SYSTEM_ERROR {
                    warn!(peer = %context.peer, code = request.code, remark = %failure.remark, "request failed");
                }
                request.error(failure.code, failure.remark)
            }
        };
        Some(response.into())
    }

    fn connection_closed(&self, context: &ConnectionContext) {
        for key in self.routes.borrow_mut().channel_closed(context.id) {
            info!(addr = %key.addr, cluster = %key.cluster, peer = %context.peer, "broker's connection closed: removed");
        }
    }
}

impl NamesrvProcessor {
    pub fn new(config: NamesrvConfig, kv: KvConfig) -> NamesrvProcessor {
        NamesrvProcessor {
            routes: RefCell::new(RouteInfo::new(config.broker_channel_expired_time_ms)),
            kv: RefCell::new(kv),
            config: RefCell::new(config),
        }
    }

    fn handle(&self, context: &ConnectionContext, request: &RemotingCommand) -> Handled {
        match request.code {
            rc::PUT_KV_CONFIG => {
                let h: PutKvConfigRequestHeader = request.decode_header()?;
                self.kv.borrow_mut().put(&h.namespace, &h.key, &h.value);
                Ok(request.success())
            }
            rc::GET_KV_CONFIG => {
                let h: KvConfigKeyHeader = request.decode_header()?;
                match self.kv.borrow().get(&h.namespace, &h.key) {
                    Some(value) => Ok(request.success().with_header(&GetKvConfigResponseHeader {
                        value: Some(value.to_owned()),
                    })),
                    None => Err(Failure {
                        code: response_code::QUERY_NOT_FOUND,
                        remark: format!(
                            "No config item, Namespace: {} Key: {}",
                            h.namespace, h.key
                        ),
                    }),
                }
            }
            rc::DELETE_KV_CONFIG => {
                let h: KvConfigKeyHeader = request.decode_header()?;
                self.kv.borrow_mut().delete(&h.namespace, &h.key);
                Ok(request.success())
            }
            rc::GET_KVLIST_BY_NAMESPACE => {
                let h: GetKvListByNamespaceRequestHeader = request.decode_header()?;
                match self.kv.borrow().namespace(&h.namespace) {
                    Some(table) => Ok(request.success().with_body(body::encode(&KvTable {
                        table: table.clone(),
                    }))),
                    None => Err(Failure {
                        code: response_code::QUERY_NOT_FOUND,
                        remark: format!("No config item, Namespace: {}", h.namespace),
                    }),
                }
            }
            rc::REGISTER_BROKER => self.register_broker(context, request),
            rc::UNREGISTER_BROKER => {
                let h: BrokerIdentityHeader = request.decode_header()?;
                info!(broker = %h.broker_name, addr = %h.broker_addr, id = h.broker_id, "broker unregistered");
                self.routes.borrow_mut().unregister(
                    &h.cluster_name,
                    &h.broker_addr,
                    &h.broker_name,
                    h.broker_id,
                );
                Ok(request.success())
            }
            rc::QUERY_DATA_VERSION => {
                let h: BrokerIdentityHeader = request.decode_header()?;
                let version: DataVersion = body::decode_lenient("DataVersion", &request.body)?;
                let key = BrokerAddrKey {
                    cluster: h.cluster_name,
                    addr: h.broker_addr,
                };
                let (changed, stored) =
                    self.routes
                        .borrow_mut()
                        .query_data_version(&key, &version, now_ms());
                let mut response = request
                    .success()
                    .with_header(&QueryDataVersionResponseHeader { changed });
                if let Some(stored) = stored {
                    response = response.with_body(body::encode(&stored));
                }
                Ok(response)
            }
            rc::GET_ROUTEINFO_BY_TOPIC => {
                let h: GetRouteInfoRequestHeader = request.decode_header()?;
                let Some(mut route) = self.routes.borrow().topic_route(&h.topic) else {
                    return Err(Failure {
                        code: response_code::TOPIC_NOT_EXIST,
                        remark: format!("No topic route info in name server for the topic: {}{APPLY_TOPIC_SUGGESTION}", h.topic),
                    });
                };
                if self.config.borrow().order_message_enable {
                    route.order_topic_conf = self
                        .kv
                        .borrow()
                        .get(ORDER_TOPIC_CONFIG, &h.topic)
                        .map(str::to_owned);
                }
                let style = JsonStyle::for_route_request(
                    request.version,
                    h.accept_standard_json_only.unwrap_or(false),
                );
                Ok(request.success().with_body(route.encode(style)))
            }
            rc::GET_BROKER_CLUSTER_INFO => {
                // Java always answers this one with plain fastjson (bare keys).
                Ok(request.success().with_body(
                    self.routes
                        .borrow()
                        .cluster_info()
                        .encode(JsonStyle::Fastjson),
                ))
            }
            rc::WIPE_WRITE_PERM_OF_BROKER => {
                let h: BrokerNameHeader = request.decode_header()?;
                let wipe_topic_count = self
                    .routes
                    .borrow_mut()
                    .set_write_perm(&h.broker_name, false);
                Ok(request
                    .success()
                    .with_header(&WipeWritePermResponseHeader { wipe_topic_count }))
            }
            rc::ADD_WRITE_PERM_OF_BROKER => {
                let h: BrokerNameHeader = request.decode_header()?;
                let add_topic_count = self
                    .routes
                    .borrow_mut()
                    .set_write_perm(&h.broker_name, true);
                Ok(request
                    .success()
                    .with_header(&AddWritePermResponseHeader { add_topic_count }))
            }
            rc::GET_ALL_TOPIC_LIST_FROM_NAMESERVER => {
                if !self.config.borrow().enable_all_topic_list {
                    return Err(Failure::system("disable"));
                }
                Ok(request
                    .success()
                    .with_body(body::encode(&self.routes.borrow().all_topics())))
            }
            rc::DELETE_TOPIC_IN_NAMESRV => {
                let h: DeleteTopicFromNamesrvRequestHeader = request.decode_header()?;
                self.routes
                    .borrow_mut()
                    .delete_topic(&h.topic, h.cluster_name.as_deref());
                Ok(request.success())
            }
            rc::REGISTER_TOPIC_IN_NAMESRV => {
                let h: TopicRequestHeader = request.decode_header()?;
                if !request.body.is_empty() {
                    let route = TopicRouteData::decode(&request.body)?;
                    self.routes
                        .borrow_mut()
                        .register_topic(&h.topic, &route.queue_datas);
                }
                Ok(request.success())
            }
            rc::GET_TOPICS_BY_CLUSTER => {
                let h: GetTopicsByClusterRequestHeader = request.decode_header()?;
                Ok(request.success().with_body(body::encode(
                    &self.routes.borrow().topics_by_cluster(&h.cluster),
                )))
            }
            rc::GET_SYSTEM_TOPIC_LIST_FROM_NS => Ok(request
                .success()
                .with_body(body::encode(&self.routes.borrow().system_topics()))),
            rc::GET_UNIT_TOPIC_LIST => Ok(request
                .success()
                .with_body(body::encode(&self.routes.borrow().unit_topics()))),
            rc::GET_HAS_UNIT_SUB_TOPIC_LIST => Ok(request
                .success()
                .with_body(body::encode(&self.routes.borrow().has_unit_sub_topics()))),
            rc::GET_HAS_UNIT_SUB_UNUNIT_TOPIC_LIST => Ok(request.success().with_body(
                body::encode(&self.routes.borrow().has_unit_sub_ununit_topics()),
            )),
            rc::UPDATE_NAMESRV_CONFIG => {
                let text = std::str::from_utf8(&request.body)
                    .map_err(|_| Failure::system("config body is not UTF-8"))?;
                let ignored = self
                    .config
                    .borrow_mut()
                    .update(text)
                    .map_err(Failure::system)?;
                if !ignored.is_empty() {
                    warn!(peer = %context.peer, ?ignored, "unknown name server config keys ignored");
                }
                let expire_ms = self.config.borrow().broker_channel_expired_time_ms;
                self.routes.borrow_mut().set_expire_ms_default(expire_ms);
                Ok(request.success())
            }
            rc::GET_NAMESRV_CONFIG => Ok(request
                .success()
                .with_body(self.config.borrow().to_properties())),
            code => Err(Failure {
                code: response_code::REQUEST_CODE_NOT_SUPPORTED,
                remark: format!(" request type {code} not supported"),
            }),
        }
    }

    fn register_broker(&self, context: &ConnectionContext, request: &RemotingCommand) -> Handled {
        let h: RegisterBrokerRequestHeader = request.decode_header()?;
        if let Some(expected) = h.body_crc32.filter(|crc| *crc != 0) {
            let actual = (crc32fast::hash(&request.body) & 0x7FFF_FFFF) as i32;
            if actual != expected {
                warn!(peer = %context.peer, broker = %h.broker_addr, expected, actual, "register body crc32 mismatch");
                return Err(Failure::system("crc32 not match"));
            }
        }
        if h.compressed == Some(true) {
            // 4.9 brokers compress only with compressedRegister=true (default false); 5.x never.
            return Err(Failure::system(
                "compressed broker registration is not supported; set compressedRegister=false",
            ));
        }
        let (topics, filter_servers) = if request.body.is_empty() {
            (None, Vec::new())
        } else if request.version >= version::V3_0_11 {
            let body: RegisterBrokerBody =
                body::decode_lenient("RegisterBrokerBody", &request.body)?;
            (
                Some(body.topic_config_serialize_wrapper),
                body.filter_server_list,
            )
        } else {
            let wrapper: TopicConfigSerializeWrapper =
                body::decode_lenient("TopicConfigSerializeWrapper", &request.body)?;
            (Some(wrapper), Vec::new())
        };
        let topic_count = topics.as_ref().map_or(0, |t| t.topic_config_table.len());
        let result = self.routes.borrow_mut().register(
            Registration {
                cluster: h.cluster_name,
                addr: h.broker_addr.clone(),
                broker_name: h.broker_name.clone(),
                broker_id: h.broker_id,
                ha_server_addr: h.ha_server_addr,
                topics,
                filter_servers,
                timeout_ms: h
                    .heartbeat_timeout_millis
                    .and_then(|t| u64::try_from(t).ok())
                    .filter(|t| *t > 0),
                channel: Some(context.id),
            },
            now_ms(),
        );
        info!(broker = %h.broker_name, addr = %h.broker_addr, id = h.broker_id, topic_count, "broker registered");
        let mut response = request
            .success()
            .with_header(&RegisterBrokerResponseHeader {
                ha_server_addr: result.ha_server_addr,
                master_addr: result.master_addr,
            });
        if let Some(table) = self.kv.borrow().namespace(ORDER_TOPIC_CONFIG) {
            response = response.with_body(body::encode(&KvTable {
                table: table.clone(),
            }));
        }
        debug_assert!(RegisterBrokerResponseHeader::NAME.ends_with("Header"));
        Ok(response)
    }
}

fn now_ms() -> u64 {
    runtime::now_ms().max(0) as u64
}
