/**
 * Types of parse-prometheus-text-format 1.1.1, which ships none: it parses the
 * Prometheus text format into one entry per metric family, values as strings.
 */
declare module 'parse-prometheus-text-format' {
  /** One sample of a counter, gauge or untyped family. */
  export interface ParsedSample {
    value: string;
    labels?: Record<string, string>;
  }

  /** One label set of a histogram family: cumulative counts by upper bound (`le`). */
  export interface ParsedHistogram {
    buckets: Record<string, string>;
    count: string;
    sum: string;
    labels?: Record<string, string>;
  }

  /** One label set of a summary family. */
  export interface ParsedSummary {
    quantiles: Record<string, string>;
    count: string;
    sum: string;
    labels?: Record<string, string>;
  }

  /** One metric family. */
  export interface ParsedFamily {
    name: string;
    help: string;
    type: 'COUNTER' | 'GAUGE' | 'HISTOGRAM' | 'SUMMARY' | 'UNTYPED';
    metrics: (ParsedSample | ParsedHistogram | ParsedSummary)[];
  }

  /** Parses a text-format exposition. */
  export default function parsePrometheusTextFormat(text: string): ParsedFamily[];
}
