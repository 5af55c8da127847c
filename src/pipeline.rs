//! The userspace pipeline: decode -> track -> enrich -> format -> sink.
//! One instance, driven by the ring-buffer callback and the periodic tick.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;

use crate::decode::{decode, Fact, TaskIds};
use crate::enrich::container::container_id;
use crate::enrich::Enricher;
use crate::event::{SensorError, SensorLoss, SensorStats, SENSOR_ERROR, SENSOR_LOSS, SENSOR_STATS};
use crate::filter::{RuleSet, Verdict};
use crate::format::service::ServiceState;
use crate::format::Formatter;
use crate::health::{Health, Loss};
use crate::probes::KernelCounters;
use crate::sink::queue::{LineKind, SinkQueue};
use crate::track::process::{ProcessInfo, ProcessTable};
use crate::track::tcp::{Connection, Owner, Protocol, TcpTracker};
use crate::track::udp::UdpTracker;

#[derive(Debug, Default, Clone, Copy)]
pub struct PipelineStats {
    pub facts: u64,
    pub decode_errors: u64,
    pub events_written: u64,
    /// Events a config rule excluded.
    pub events_filtered: u64,
}

pub struct Pipeline {
    pub procs: ProcessTable,
    pub tcp: TcpTracker,
    pub udp: UdpTracker,
    enrich: Enricher,
    pub rules: RuleSet,
    formatter: Formatter,
    pub sink: SinkQueue,
    health: Health,
    pub stats: PipelineStats,
    /// First output error; the main loop stops on it.
    pub fatal: Option<anyhow::Error>,
    /// Times the sensor took normal CPU priority to catch up (pace.rs).
    pub cpu_boosts: Arc<AtomicU64>,
    /// Bursts the reader left in the ring buffer until they ended (burst.rs).
    pub bursts_deferred: u64,
    /// Most unread bytes seen in the ring buffer: since start, and since
    /// the last stats event (for sizing --ringbuf-mib).
    ring_peak: u64,
    ring_peak_interval: u64,
}

/// The stateful trackers of the track stage.
pub struct Trackers {
    pub procs: ProcessTable,
    pub tcp: TcpTracker,
    pub udp: UdpTracker,
}

impl Pipeline {
    pub fn new(
        track: Trackers,
        enrich: Enricher,
        rules: RuleSet,
        formatter: Formatter,
        sink: SinkQueue,
        health: Health,
    ) -> Self {
        let Trackers { procs, tcp, udp } = track;
        Self {
            procs,
            tcp,
            udp,
            enrich,
            rules,
            formatter,
            sink,
            health,
            stats: PipelineStats::default(),
            fatal: None,
            cpu_boosts: Arc::default(),
            bursts_deferred: 0,
            ring_peak: 0,
            ring_peak_interval: 0,
        }
    }

    /// Unread bytes in the ring buffer, seen before a poll.
    pub fn note_ring_fill(&mut self, unread: u64) {
        self.ring_peak = self.ring_peak.max(unread);
        self.ring_peak_interval = self.ring_peak_interval.max(unread);
    }

    /// Ring-buffer callback body.
    pub fn handle_record(&mut self, data: &[u8]) {
        self.stats.facts += 1;
        match decode(data) {
            Ok(fact) => self.handle(fact),
            Err(e) => {
                self.stats.decode_errors += 1;
                tracing::warn!("undecodable kernel record: {e}");
            }
        }
    }

    fn owner(&mut self, task: TaskIds) -> Owner {
        Owner { task, process: self.procs.lookup(task.tgid) }
    }

    pub fn handle(&mut self, fact: Fact) {
        match fact {
            Fact::TcpConnect { ts_ns, sk, task } => {
                let owner = self.owner(task);
                self.tcp.on_connect(sk, owner, ts_ns);
            }
            Fact::TcpEstablished { ts_ns, sk, outbound, endpoints } => {
                if let Some(conn) = self.tcp.on_established(ts_ns, sk, outbound, endpoints) {
                    self.emit(&conn);
                }
            }
            Fact::TcpAborted { sk, .. } => {
                if let Some(conn) = self.tcp.on_aborted(sk) {
                    self.emit(&conn);
                }
            }
            Fact::TcpAccept { ts_ns, sk, task, endpoints, handshake_done } => {
                let owner = self.owner(task);
                if let Some(conn) = self.tcp.on_accept(sk, endpoints, handshake_done, owner, ts_ns) {
                    self.emit(&conn);
                }
            }
            Fact::ProcExec {
                task, ppid, start_boot_ns, identity, path, path_truncated, argv, argv_truncated, ..
            } => {
                self.procs.exec(ProcessInfo {
                    ns_pid: identity.ns_tgid,
                    container_id: container_id(&identity.cgroup),
                    cgroup: identity.cgroup,
                    pid: task.tgid,
                    ppid,
                    uid: task.uid,
                    image: path,
                    image_truncated: path_truncated,
                    argv,
                    argv_truncated,
                    start_boot_ns,
                    text: Default::default(),
                });
            }
            Fact::ProcFork { parent_tgid, child_tgid, start_boot_ns, uid, identity, .. } => {
                self.procs.fork(parent_tgid, child_tgid, start_boot_ns, uid, identity);
            }
            Fact::ProcExit { ts_ns, tgid } => self.procs.exit(tgid, ts_ns),
            Fact::ProcCgroup { tgid, identity } => self.procs.moved(tgid, identity),
            Fact::UdpFlow { ts_ns, key, task, recorded, seen_by } => {
                let process = self.procs.lookup(task.tgid);
                if let Some(conn) = self.udp.on_flow(ts_ns, key, task, recorded, seen_by, process) {
                    self.emit(&conn);
                }
            }
        }
    }

    fn emit(&mut self, conn: &Connection) {
        if self.fatal.is_some() {
            return;
        }
        let mut event = self.enrich.network_connect(conn, &self.procs);
        match self.rules.evaluate(&event) {
            Verdict::Drop => {
                self.stats.events_filtered += 1;
                return;
            }
            Verdict::Report { rule_name: Some(name) } => event.rule_name = name.into(),
            Verdict::Report { rule_name: None } => {}
        }
        let now = self.now_unix_ns();
        let kind = match conn.protocol {
            Protocol::Tcp => LineKind::Tcp,
            Protocol::Udp => LineKind::Udp,
        };
        let formatter = &mut self.formatter;
        match self.sink.send_with(kind, |batch| formatter.network_connect(&event, now, batch)) {
            Ok(true) => self.stats.events_written += 1,
            Ok(false) => {}
            Err(e) => self.fatal = Some(e),
        }
    }

    fn now_unix_ns(&self) -> i128 {
        self.enrich.clock.unix_ns(crate::enrich::boot_now_ns())
    }

    /// Event ID 4: the sensor started or stops.
    pub fn service_state(&mut self, state: ServiceState) -> Result<()> {
        let mut line = Vec::new();
        let now = self.now_unix_ns();
        self.formatter.service_state(state, self.rules.schema_version(), now, &mut line)?;
        self.sink.send(LineKind::Sensor, &line);
        Ok(())
    }

    /// Event ID 255 (Sysmon's error report) for a sensor error recovered
    /// from: `id` names it, `description` says what was done.
    pub fn sensor_error(&mut self, id: &str, description: &str) -> Result<()> {
        let now = self.now_unix_ns();
        let event = SensorError {
            event_id: SENSOR_ERROR,
            utc_time: crate::enrich::format_utc(now),
            id: id.to_string(),
            description: description.to_string(),
        };
        let mut line = Vec::new();
        self.formatter.sensor_event(SENSOR_ERROR, &event, &event.fields(), now, &mut line)?;
        self.sink.send(LineKind::Sensor, &line);
        Ok(())
    }

    /// A corrupt state file found at start, said in an event.
    pub fn announce_recovery(&mut self) -> Result<()> {
        match self.formatter.take_recovery_notice() {
            Some(said) => self.sensor_error("StateFileCorrupt", &said),
            None => Ok(()),
        }
    }

    /// Event ID 16: the rules in force (at start and after each reload).
    pub fn config_change(&mut self) -> Result<()> {
        let mut line = Vec::new();
        let now = self.now_unix_ns();
        let (name, hash) = match self.rules.config_bytes() {
            Some(bytes) => (self.rules.config_name().unwrap_or("-").to_string(), Some(sha256_hex(bytes))),
            None => ("Defaults".to_string(), None),
        };
        self.formatter.config_change(&name, hash.as_deref(), now, &mut line)?;
        self.sink.send(LineKind::Sensor, &line);
        Ok(())
    }

    /// Every loss counter there is, as totals since start.
    fn loss_totals(&self, kernel: &KernelCounters) -> Loss {
        let q = self.sink.stats();
        Loss {
            ring_buffer_drops: kernel.ringbuf_drops,
            tcp_accepts_unresolved: kernel.tcp.accepts_unresolved,
            udp_shed_in_kernel: kernel.udp[3],
            udp_shed_in_queue: q.udp_shed,
            queue_dropped: q.dropped,
            sink_dropped: q.sink_dropped,
        }
    }

    /// Emits a loss event if anything was lost since the last one, and the
    /// stats event when due.
    pub fn report_health(&mut self, now_boot_ns: u64, kernel: &KernelCounters) -> Result<()> {
        let totals = self.loss_totals(kernel);
        let now = self.now_unix_ns();
        if let Some(new) = self.health.unannounced(totals) {
            let event = SensorLoss {
                event_id: SENSOR_LOSS,
                utc_time: crate::enrich::format_utc(now),
                ring_buffer_drops: new.ring_buffer_drops,
                tcp_accepts_unresolved: new.tcp_accepts_unresolved,
                udp_shed_in_kernel: new.udp_shed_in_kernel,
                udp_shed_in_queue: new.udp_shed_in_queue,
                queue_dropped: new.queue_dropped,
                output_dropped: new.sink_dropped,
            };
            tracing::warn!(
                "events lost: ring buffer {}, TCP accepts unresolved {}, UDP shed in kernel {}, UDP shed in queue {}, \
                 queue full {}, output {}",
                new.ring_buffer_drops,
                new.tcp_accepts_unresolved,
                new.udp_shed_in_kernel,
                new.udp_shed_in_queue,
                new.queue_dropped,
                new.sink_dropped
            );
            let mut line = Vec::new();
            self.formatter.sensor_event(SENSOR_LOSS, &event, &event.fields(), now, &mut line)?;
            self.sink.send(LineKind::Sensor, &line);
        }
        if let Some((secs, rate)) = self.health.stats_due(now_boot_ns, self.stats.events_written) {
            let (connecting, unaccepted, early) = self.tcp.pending();
            let event = SensorStats {
                event_id: SENSOR_STATS,
                utc_time: crate::enrich::format_utc(now),
                interval_seconds: secs,
                events_per_second: rate,
                events_written: self.stats.events_written,
                events_filtered: self.stats.events_filtered,
                lost: totals.total(),
                udp_packets_suppressed: kernel.udp[0],
                udp_flows_tracked: self.udp.tracked as u64,
                tcp_pending: (connecting + unaccepted + early) as u64,
                processes: self.procs.len() as u64,
                cpu_boosts: self.cpu_boosts.load(Ordering::Relaxed),
                bursts_deferred: self.bursts_deferred,
                ring_buffer_peak_bytes: std::mem::take(&mut self.ring_peak_interval),
            };
            let mut line = Vec::new();
            self.formatter.sensor_event(SENSOR_STATS, &event, &event.fields(), now, &mut line)?;
            self.sink.send(LineKind::Sensor, &line);
        }
        Ok(())
    }

    /// Persists the EventRecordID, writes out what is queued, stops the writer.
    pub fn close(self) -> Result<()> {
        self.formatter.close()?;
        self.sink.close()
    }

    /// Periodic work: age off what waited too long, keep the clock in sync.
    pub fn tick(&mut self, now_boot_ns: u64) {
        for conn in self.tcp.expire(now_boot_ns) {
            self.emit(&conn);
        }
        self.procs.expire(now_boot_ns);
        self.enrich.clock.maybe_resync(now_boot_ns);
    }

    pub fn stats_line(&self, kernel: &KernelCounters) -> String {
        let udp_kernel = kernel.udp;
        let t = &self.tcp.stats;
        let u = &self.udp.stats;
        let q = self.sink.stats();
        let (connecting, unaccepted, early_accepts) = self.tcp.pending();
        format!(
            "stats: events_written={} events_filtered={} excluded_in_kernel={} facts={} decode_errors={} ringbuf_drops={} \
             tcp_outbound={} tcp_inbound={} tcp_outbound_unattributed={} tcp_handshakes_failed={} \
             tcp_inbound_handshakes={} tcp_inbound_never_accepted={} tcp_pending_connects_expired={} \
             tcp_accepts_unresolved={} \
             pending_connecting={} pending_unaccepted={} pending_early_accepts={} processes={} \
             process_lookups_proc={} process_unknown={} \
             udp_flows_reported={} udp_packets_suppressed={} udp_flows_expired={} udp_flows_evicted={} \
             udp_reported_while_full={} udp_repeats_suppressed={} udp_flows_walked_peak={} udp_recv_peer_unknown={} udp_shed={} \
             udp_send_dest_unknown={} queue_written={} queue_udp_shed={} queue_dropped={} cpu_boosts={} \
             bursts_deferred={} ringbuf_peak_bytes={}",
            self.stats.events_written,
            self.stats.events_filtered,
            kernel.excluded,
            self.stats.facts,
            self.stats.decode_errors,
            kernel.ringbuf_drops,
            t.outbound_reported,
            t.inbound_reported,
            t.outbound_unattributed,
            t.handshakes_failed,
            kernel.tcp.inbound_handshakes,
            t.inbound_never_accepted,
            t.pending_connects_expired,
            kernel.tcp.accepts_unresolved,
            connecting,
            unaccepted,
            early_accepts,
            self.procs.len(),
            self.procs.stats.from_proc,
            self.procs.stats.unknown,
            u.flows_reported,
            udp_kernel[0],
            u.flows_expired,
            u.flows_evicted,
            u.reported_while_full,
            u.repeats_suppressed,
            u.walked_peak,
            udp_kernel[2],
            udp_kernel[3],
            udp_kernel[4],
            q.written,
            q.udp_shed,
            q.dropped,
            self.cpu_boosts.load(Ordering::Relaxed),
            self.bursts_deferred,
            self.ring_peak,
        )
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
