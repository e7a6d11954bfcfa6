//! What the commands print: summaries and the throughput report.

use meridian_pipeline::gaps::GapTotals;
use meridian_pipeline::harness::gen::GenConfig;
use meridian_pipeline::harness::runner::RunReport;
use meridian_pipeline::net::serve::ServeSummary;
use meridian_pipeline::net::sink::SinkSummary;
use meridian_pipeline::pipeline::PipelineStats;
use meridian_pipeline::stage::Stage;
use meridian_pipeline::Summary;

/// One line defining the two words a reader will not guess.
const TERMS: &str = "late: first seen below its satellite's highest seq, forwarded; \
stale: older than the window, forwarded unless --stale drop";

/// Where stale frames belong in a report: the count among the forwarded,
/// and the tail of the "dropped" line (empty unless `--stale drop`).
fn stale_split(p: &PipelineStats, stale_dropped: bool) -> (u64, String) {
    if stale_dropped {
        (0, format!(", stale {} (--stale drop)", p.stale))
    } else {
        (p.stale, String::new())
    }
}

/// Prints `value` as one JSON object on one line of stderr.
pub(crate) fn json_line<T: serde::Serialize>(value: &T) {
    eprintln!(
        "{}",
        serde_json::to_string(value).expect("summaries serialise")
    );
}

/// The `process` summary (and the first lines of `serve`'s).
pub(crate) fn print_summary(s: &Summary, stale_dropped: bool) {
    let (d, p) = (&s.decode, &s.pipeline);
    eprintln!(
        "decoded {} frames from {} bytes ({} skipped: {} bad headers, {} CRC errors, {} truncated)",
        d.frames_decoded, d.input_bytes, d.skipped_bytes, d.bad_header, d.crc_errors, d.truncated
    );
    let (forwarded_stale, dropped_stale) = stale_split(p, stale_dropped);
    eprintln!(
        "forwarded {} frames ({} bytes, late {}, stale {forwarded_stale}) in {} batches",
        p.forwarded, p.forwarded_bytes, p.late, p.batches
    );
    eprintln!(
        "dropped: duplicates {}, invalid {}{dropped_stale}",
        p.duplicates, p.invalid
    );
    eprintln!("({TERMS})");
}

/// The gap line: seqs missing between each satellite's lowest and highest
/// forwarded seq, and how many gaps late frames filled.
pub(crate) fn print_gaps(g: &GapTotals) {
    eprintln!(
        "gaps: {} seqs missing in {} ranges ({} filled late){}",
        g.missing,
        g.gap_ranges,
        g.gaps_filled,
        if g.gap_ranges_dropped > 0 || g.gap_untracked_frames > 0 {
            format!(
                "; over the tracking bounds: {} ranges forgotten, {} frames untracked",
                g.gap_ranges_dropped, g.gap_untracked_frames
            )
        } else {
            String::new()
        }
    );
}

/// `serve`'s text summary.
pub(crate) fn print_serve_summary(s: &ServeSummary, stale_dropped: bool) {
    print_summary(&s.summary, stale_dropped);
    print_gaps(&s.gaps);
    eprintln!(
        "connections: {} accepted, {} rejected, {} idle closed, {} bad HELLOs; {} station bytes acked",
        s.connections_accepted, s.connections_rejected, s.idle_closed, s.hello_errors, s.acked_bytes
    );
    if s.auth_failures > 0 || s.tls_errors > 0 || s.unauthorized > 0 {
        eprintln!(
            "security: {} connections refused (auth failures), {} TLS errors, {} unauthorized frames dropped",
            s.auth_failures, s.tls_errors, s.unauthorized
        );
    }
    eprintln!(
        "downstream: {} reconnects, {} connect failures, {} failures, {} bytes resent; {} unacked frames ({} unsent)",
        s.downstream_reconnects,
        s.connect_failures,
        s.downstream_failures,
        s.resent_bytes,
        s.unacked_frames,
        s.unsent_frames
    );
    eprintln!(
        "read-to-forward latency: p50 {} us, p99 {} us, p99.9 {} us ({} frames)",
        s.latency_us.p50, s.latency_us.p99, s.latency_us.p999, s.latency_us.frames
    );
    eprintln!(
        "read-to-delivered latency: p50 {} us, p99 {} us, p99.9 {} us ({} frames)",
        s.ack_latency_us.p50, s.ack_latency_us.p99, s.ack_latency_us.p999, s.ack_latency_us.frames
    );
}

/// `sink`'s text summary.
pub(crate) fn print_sink_summary(s: &SinkSummary) {
    eprintln!(
        "sink: {} frames, {} bytes, {} unique keys, {} repeated, {} CRC errors, {} skipped bytes{}",
        s.frames,
        s.bytes,
        s.unique_keys,
        s.repeated_keys,
        s.crc_errors,
        s.skipped_bytes,
        if s.eof {
            ""
        } else {
            " (stopped before end of stream)"
        }
    );
}

/// `run`'s report on stdout.
pub(crate) fn print_report(
    r: &RunReport,
    g: &GenConfig,
    capture_bytes: usize,
    stale_dropped: bool,
) {
    let s = &r.summary;
    let p = &s.pipeline;
    println!(
        "Meridian throughput: layout {}, batch {}, {} thread{}, {:.2} s",
        r.layout,
        r.batch_size,
        r.threads,
        if r.threads == 1 { "" } else { "s" },
        r.elapsed_s
    );
    println!(
        "workload: {} sats, {} stations, payload {}..{} B, seed {}; {} frames ({:.1} MB) in memory, {} pass{}",
        g.sats,
        g.stations,
        g.payload_min,
        g.payload_max,
        g.seed,
        g.frames,
        capture_bytes as f64 / 1e6,
        r.passes,
        if r.passes == 1 { "" } else { "es" }
    );
    println!();
    println!(
        "frames in    {:>14}   {:>8.2} M frames/s   {:>8.1} MB/s of wire bytes",
        r.frames,
        r.frames_per_s / 1e6,
        r.bytes_per_s / 1e6
    );
    let (forwarded_stale, dropped_stale) = stale_split(p, stale_dropped);
    println!(
        "forwarded    {:>14}   ({} bytes; late {}, stale {forwarded_stale})",
        r.forwarded, p.forwarded_bytes, p.late
    );
    println!(
        "dropped      {:>14} duplicates, {} invalid{dropped_stale}",
        p.duplicates, p.invalid
    );
    println!("({TERMS})");
    println!();
    println!(
        "stage        ns/frame    share   allocs/batch   bytes/batch   (allocations after {} warm-up batches)",
        r.warmup_batches
    );
    for stage in Stage::ALL {
        let x = &r.stages[stage];
        println!(
            "{:<10} {:>10.2} {:>7.1}% {:>14.2} {:>13.1}",
            stage.name(),
            x.ns_per_frame,
            x.share * 100.0,
            x.allocs_per_batch,
            x.alloc_bytes_per_batch
        );
    }
    let after_decode: f64 = Stage::AFTER_DECODE
        .iter()
        .map(|&st| r.stages[st].ns_per_frame)
        .sum();
    println!();
    println!(
        "validate+dedup+forward: {:.1} M frames/s; decode: {:.2} GB/s of wire bytes",
        1e3 / after_decode.max(1e-9),
        (s.decode.input_bytes as f64 / r.frames.max(1) as f64)
            / r.stages[Stage::Decode].ns_per_frame.max(1e-9)
    );
}
