//! The userspace pipeline: decode -> track -> enrich -> filter -> format ->
//! sink. One instance, driven by the reader (src/reader.rs): the ring-buffer
//! callback, the periodic tick, and the loss and stats events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;

use crate::decode::{decode, DnsPacket, Fact, TaskIds};
use crate::dns::{Answered, DnsTracker};
use crate::enrich::Enricher;
use crate::event::{LifecycleEvent, SensorError, Shared, SENSOR_ERROR, SENSOR_LOSS, SENSOR_STATS};
use crate::filter::{RuleSet, Verdict};
use crate::format::sensor_events::ServiceState;
use crate::format::Formatter;
use crate::health::{self, Counter, Counters, Health};
use crate::probes::{KernelCounters, Probes};
use crate::sink::queue::{LineKind, SinkQueue};
use crate::track::container::container_id;
use crate::track::lifecycle::{ClosedConnection, FailedConnect, Failure, LifecycleMode, LifecycleTracker};
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
    /// Lifecycle events written: failed (252), closed (253).
    pub failed_written: u64,
    pub closed_written: u64,
    /// Lifecycle events a config rule excluded.
    pub lifecycle_filtered: u64,
}

pub struct Pipeline {
    procs: ProcessTable,
    tcp: TcpTracker,
    udp: UdpTracker,
    lifecycle: LifecycleTracker,
    mode: LifecycleMode,
    /// DNS queries and responses (`--dns` other than off).
    dns: Option<DnsTracker>,
    /// Whether DnsQuery events are written (`--dns events|both`).
    dns_events: bool,
    enrich: Enricher,
    rules: RuleSet,
    formatter: Formatter,
    /// The output queue; the reader commits batches and holds back on it.
    pub sink: SinkQueue,
    health: Health,
    stats: PipelineStats,
    /// First output error; the reader stops on it.
    fatal: Option<anyhow::Error>,
    /// Times the sensor took normal CPU priority to catch up (backpressure::pace).
    cpu_boosts: Arc<AtomicU64>,
    /// Bursts the reader left in the ring buffer until they ended (backpressure::burst).
    bursts_deferred: u64,
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
    pub lifecycle: LifecycleTracker,
    pub mode: LifecycleMode,
    pub dns: Option<DnsTracker>,
    pub dns_events: bool,
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
        let Trackers { procs, tcp, udp, lifecycle, mode, dns, dns_events } = track;
        Self {
            procs,
            tcp,
            udp,
            lifecycle,
            mode,
            dns,
            dns_events,
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

    /// Facts handled since start.
    pub fn facts_read(&self) -> u64 {
        self.stats.facts
    }

    /// The first output failure, if any: the sensor stops on it.
    pub fn take_failure(&mut self) -> Option<anyhow::Error> {
        self.fatal.take().or_else(|| self.sink.failed())
    }

    /// The counter the CPU priority watchdog bumps at each catch-up.
    pub fn cpu_boosts(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.cpu_boosts)
    }

    pub fn note_bursts_deferred(&mut self, bursts: u64) {
        self.bursts_deferred = bursts;
    }

    /// Events 4 (started) and 16 (the config in force), written out at once.
    pub fn announce_start(&mut self) -> Result<()> {
        self.service_state(ServiceState::Started)?;
        self.announce_recovery()?;
        self.config_change()?;
        self.sink.commit();
        Ok(())
    }

    /// A reloaded config: its rules from now on, and event 16 saying so.
    pub fn replace_rules(&mut self, rules: RuleSet) -> Result<()> {
        self.rules = rules;
        self.config_change()
    }

    /// The kernel's UDP flow table is full: it needs a sweep now.
    pub fn udp_table_needs_room(&self) -> bool {
        self.udp.needs_room()
    }

    /// Ages the kernel's UDP flow table and makes room in it (policy in track::udp).
    pub fn sweep_udp_flows(&mut self, probes: &Probes<'_>, now: u64) {
        let plan = self.udp.plan_sweep(probes.udp_flow_entries(), now);
        probes.udp_forget(&plan.expired);
        probes.udp_forget(&plan.evicted);
        for (key, seen) in std::mem::take(&mut self.udp.to_record) {
            if let Err(e) = probes.udp_record(&key, seen) {
                tracing::debug!("{e:#}");
            }
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
                    self.emit_tcp(conn, ts_ns);
                }
            }
            Fact::TcpAborted { ts_ns, sk, err, syn_retrans, endpoints, .. } => {
                let (accepted, failed) = self.tcp.on_aborted(sk);
                if let Some(conn) = accepted {
                    self.emit(&conn);
                }
                if let (Some(owner), true) = (failed, self.mode.failed()) {
                    let conn = Connection {
                        sk,
                        protocol: Protocol::Tcp,
                        established_ns: ts_ns,
                        endpoints,
                        initiated: true,
                        owner: Some(owner),
                        attribution: crate::track::tcp::Attribution::Connect,
                    };
                    let failure = FailedConnect {
                        conn,
                        failure: Failure::from_err(err),
                        attempts: 1 + u64::from(syn_retrans),
                        count: 1,
                    };
                    for f in self.lifecycle.failed(failure, ts_ns) {
                        self.emit_failed(&f);
                    }
                }
            }
            Fact::TcpClosed { ts_ns, sk, oldstate, counters } => {
                if let Some(closed) = self.lifecycle.closed(sk, ts_ns, oldstate, &counters) {
                    self.emit_closed(&closed);
                }
            }
            Fact::TcpAccept { ts_ns, sk, task, endpoints, handshake_done } => {
                let owner = self.owner(task);
                if let Some(conn) = self.tcp.on_accept(sk, endpoints, handshake_done, owner, ts_ns) {
                    self.emit_tcp(conn, ts_ns);
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
            Fact::Dns(packet) => self.on_dns(packet),
        }
    }

    fn on_dns(&mut self, packet: DnsPacket) {
        let Some(dns) = self.dns.as_mut() else { return };
        let ts_ns = packet.ts_ns;
        let seen = dns.on_packet(packet);
        for (netns, msg) in &seen.responses {
            self.enrich.learn_names(*netns, msg, ts_ns);
        }
        for done in &seen.done {
            self.emit_dns(done);
        }
    }

    fn emit_dns(&mut self, done: &Answered) {
        if self.fatal.is_some() || !self.dns_events {
            return;
        }
        let mut event = self.enrich.dns_query(done, &mut self.procs);
        match self.rules.evaluate_dns(&event) {
            Verdict::Drop => {
                self.stats.events_filtered += 1;
                return;
            }
            Verdict::Report { rule_name: Some(name) } => event.rule_name = name.into(),
            Verdict::Report { rule_name: None } => {}
        }
        let now = self.now_unix_ns();
        let formatter = &mut self.formatter;
        match self.sink.send_with(LineKind::Udp, |batch| formatter.dns_query(&event, now, batch)) {
            Ok(true) => self.stats.events_written += 1,
            Ok(false) => {}
            Err(e) => self.fatal = Some(e),
        }
    }

    /// A TCP connection's event 3; a reported one is kept until its close
    /// (event 253) when those are on.
    fn emit_tcp(&mut self, conn: Connection, now_ns: u64) {
        if let Some(rule_name) = self.emit(&conn) {
            if self.mode.closed() && conn.sk != 0 {
                self.lifecycle.opened(conn.sk, conn, rule_name, now_ns);
            }
        }
    }

    /// Event 3; returns its RuleName when the rules report it.
    fn emit(&mut self, conn: &Connection) -> Option<Shared> {
        if self.fatal.is_some() {
            return None;
        }
        let mut event = self.enrich.network_connect(conn, &self.procs);
        match self.rules.evaluate(&event) {
            Verdict::Drop => {
                self.stats.events_filtered += 1;
                return None;
            }
            Verdict::Report { rule_name: Some(name) } => event.rule_name = name.into(),
            Verdict::Report { rule_name: None } => {}
        }
        let rule_name = event.rule_name.clone();
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
        Some(rule_name)
    }

    fn emit_failed(&mut self, f: &FailedConnect) {
        if self.fatal.is_some() {
            return;
        }
        let event = self.enrich.connection_failed(f, &self.procs);
        if self.emit_lifecycle(event, LineKind::Tcp) {
            self.stats.failed_written += 1;
        }
    }

    fn emit_closed(&mut self, c: &ClosedConnection) {
        if self.fatal.is_some() {
            return;
        }
        let event = self.enrich.connection_closed(c, &self.procs);
        let kind = match c.conn.protocol {
            Protocol::Tcp => LineKind::Tcp,
            Protocol::Udp => LineKind::Udp,
        };
        if self.emit_lifecycle(event, kind) {
            self.stats.closed_written += 1;
        }
    }

    /// Filters and writes a lifecycle event; whether it was written.
    /// (Counted apart from event 3's events_written and events_filtered.)
    fn emit_lifecycle(&mut self, mut event: LifecycleEvent, kind: LineKind) -> bool {
        match self.rules.evaluate_lifecycle(&event) {
            Verdict::Drop => {
                self.stats.lifecycle_filtered += 1;
                return false;
            }
            Verdict::Report { rule_name: Some(name) } => event.connect.rule_name = name.into(),
            Verdict::Report { rule_name: None } => {}
        }
        let now = self.now_unix_ns();
        let formatter = &mut self.formatter;
        match self.sink.send_with(kind, |batch| formatter.lifecycle(&event, now, batch)) {
            Ok(true) => true,
            Ok(false) => false,
            Err(e) => {
                self.fatal = Some(e);
                false
            }
        }
    }

    /// At sensor stop, once the kernel's report of open connections is read:
    /// folded failures not yet reported, and open connections the kernel did
    /// not cover (without figures).
    pub fn finish_lifecycle(&mut self, now_boot_ns: u64) {
        for f in self.lifecycle.drain_folds() {
            self.emit_failed(&f);
        }
        for c in self.lifecycle.open_at_stop(now_boot_ns) {
            self.emit_closed(&c);
        }
    }

    /// Whether close events are on (the reader then asks the kernel for
    /// what is still open at stop).
    pub fn closed_events(&self) -> bool {
        self.mode.closed()
    }

    fn now_unix_ns(&self) -> i128 {
        self.enrich.clock.unix_ns(crate::clock::boot_now_ns())
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
            utc_time: crate::clock::format_utc(now),
            id: id.to_string(),
            description: description.to_string(),
        };
        let mut line = Vec::new();
        self.formatter.own_event(SENSOR_ERROR, &event, &event.fields(), now, &mut line)?;
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

    /// Every counter there is, at this moment (named in src/health.rs).
    pub fn counters(&self, kernel: &KernelCounters) -> Counters {
        use crate::contract::udp_counter as k;
        let q = self.sink.stats();
        let t = &self.tcp.stats;
        let u = &self.udp.stats;
        let d = self.dns.as_ref().map(|t| t.stats).unwrap_or_default();
        let n = self.enrich.names.as_ref().map(|c| c.stats).unwrap_or_default();
        let (connecting, unaccepted, early) = self.tcp.pending();
        let mut c = Counters::default();
        for (counter, value) in [
            (Counter::EventsWritten, self.stats.events_written),
            (Counter::EventsFiltered, self.stats.events_filtered),
            (Counter::UdpPacketsSuppressed, kernel.udp(k::UDP_SUPPRESSED)),
            (Counter::UdpFlowsTracked, self.udp.tracked as u64),
            (Counter::TcpPending, (connecting + unaccepted + early) as u64),
            (Counter::Processes, self.procs.len() as u64),
            (Counter::CpuBoosts, self.cpu_boosts.load(Ordering::Relaxed)),
            (Counter::BurstsDeferred, self.bursts_deferred),
            (Counter::RingBufferPeakInterval, self.ring_peak_interval),
            (Counter::ExcludedInKernel, kernel.excluded),
            (Counter::Facts, self.stats.facts),
            (Counter::DecodeErrors, self.stats.decode_errors),
            (Counter::RingBufferDrops, kernel.ringbuf_drops),
            (Counter::TcpAcceptsUnresolved, kernel.tcp.accepts_unresolved),
            (Counter::UdpShedInKernel, kernel.udp(k::UDP_SHED)),
            (Counter::UdpShedInQueue, q.udp_shed),
            (Counter::QueueDropped, q.dropped),
            (Counter::OutputDropped, q.sink_dropped),
            (Counter::TcpOutbound, t.outbound_reported),
            (Counter::TcpInbound, t.inbound_reported),
            (Counter::TcpOutboundUnattributed, t.outbound_unattributed),
            (Counter::TcpHandshakesFailed, t.handshakes_failed),
            (Counter::TcpInboundHandshakes, kernel.tcp.inbound_handshakes),
            (Counter::TcpInboundNeverAccepted, t.inbound_never_accepted),
            (Counter::TcpPendingConnectsExpired, t.pending_connects_expired),
            (Counter::PendingConnecting, connecting as u64),
            (Counter::PendingUnaccepted, unaccepted as u64),
            (Counter::PendingEarlyAccepts, early as u64),
            (Counter::ProcessLookupsProc, self.procs.stats.from_proc),
            (Counter::ProcessUnknown, self.procs.stats.unknown),
            (Counter::UdpFlowsReported, u.flows_reported),
            (Counter::UdpFlowsExpired, u.flows_expired),
            (Counter::UdpFlowsEvicted, u.flows_evicted),
            (Counter::UdpReportedWhileFull, u.reported_while_full),
            (Counter::UdpRepeatsSuppressed, u.repeats_suppressed),
            (Counter::UdpFlowsWalkedPeak, u.walked_peak),
            (Counter::UdpRecvPeerUnknown, kernel.udp(k::UDP_PEER_UNKNOWN)),
            (Counter::UdpSendDestUnknown, kernel.udp(k::UDP_SEND_DEST_UNKNOWN)),
            (Counter::DnsQueries, d.queries),
            (Counter::DnsResponses, d.responses),
            (Counter::DnsAnswered, d.answered),
            (Counter::DnsTimedOut, d.timed_out),
            (Counter::DnsUnmatched, d.unmatched),
            (Counter::DnsMalformed, d.malformed),
            (Counter::DnsCut, d.cut),
            (Counter::DnsPending, self.dns.as_ref().map_or(0, |t| t.pending() as u64)),
            (Counter::DnsPendingEvicted, d.pending_evicted),
            (Counter::DnsTcpGaps, self.dns.as_ref().map_or(0, |t| t.tcp_gaps())),
            (Counter::DnsNamesLearned, n.learned),
            (Counter::DnsNamesCached, self.enrich.names.as_ref().map_or(0, |c| c.len() as u64)),
            (Counter::DnsNamesExpired, n.expired),
            (Counter::DnsNamesEvicted, n.evicted),
            (Counter::QueueWritten, q.written),
            (Counter::RingBufferPeak, self.ring_peak),
            (Counter::FailedWritten, self.stats.failed_written),
            (Counter::FailuresFolded, self.lifecycle.stats.failures_folded),
            (Counter::FailFoldsEvicted, self.lifecycle.stats.folds_evicted),
            (Counter::ClosedWritten, self.stats.closed_written),
            (Counter::LifecycleFiltered, self.stats.lifecycle_filtered),
            (Counter::TcpOpen, self.lifecycle.open_connections() as u64),
            (Counter::TcpOpenEvicted, self.lifecycle.stats.open_evicted),
            (Counter::TcpClosesUnmatched, self.lifecycle.stats.closes_unmatched),
            (Counter::TcpOpenAtStopWithoutFigures, self.lifecycle.stats.open_at_stop_without_figures),
        ] {
            c.set(counter, value);
        }
        c
    }

    /// Emits a loss event if anything was lost since the last one, and the
    /// stats event when due.
    pub fn report_health(&mut self, now_boot_ns: u64, kernel: &KernelCounters) -> Result<()> {
        let counters = self.counters(kernel);
        let now = self.now_unix_ns();
        if let Some(new) = self.health.unannounced(counters.loss()) {
            tracing::warn!("events lost: {}", new.words());
            let event = new.event(crate::clock::format_utc(now));
            let mut line = Vec::new();
            self.formatter.own_event(SENSOR_LOSS, &event, &event.fields(), now, &mut line)?;
            self.sink.send(LineKind::Sensor, &line);
        }
        if let Some((secs, rate)) = self.health.stats_due(now_boot_ns, self.stats.events_written) {
            let event = health::stats_event(crate::clock::format_utc(now), secs, rate, &counters);
            self.ring_peak_interval = 0;
            let mut line = Vec::new();
            self.formatter.own_event(SENSOR_STATS, &event, &event.fields(), now, &mut line)?;
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
            self.emit_tcp(conn, now_boot_ns);
        }
        for f in self.lifecycle.expire_folds(now_boot_ns) {
            self.emit_failed(&f);
        }
        let timed_out = self.dns.as_mut().map(|d| d.expire(now_boot_ns)).unwrap_or_default();
        for done in &timed_out {
            self.emit_dns(done);
        }
        if let Some(names) = self.enrich.names.as_mut() {
            names.expire(now_boot_ns);
        }
        self.procs.expire(now_boot_ns);
        self.enrich.clock.maybe_resync(now_boot_ns);
    }

    /// `stats: key=value ...` (SIGUSR1, and at stop).
    pub fn stats_line(&self, kernel: &KernelCounters) -> String {
        self.counters(kernel).stats_line()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
