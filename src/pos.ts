/**
 * A replication position: a byte offset inside one WAL index of one generation.
 * The offset counts bytes of that index's shadow WAL, header included, so the
 * first frame starts at offset 32.
 */
export interface Pos {
  generation: string;
  index: number;
  offset: number;
}

/** The zero position, used before any generation exists. */
export const ZERO_POS: Pos = Object.freeze({ generation: '', index: 0, offset: 0 });

/**
 * Formats a position as Litestream v0.3 logs it: `generation/index:offset`, with
 * the index as 8 hex digits and the offset in decimal. The zero position prints
 * as an empty string.
 */
export function formatPos(pos: Pos): string {
  if (pos.generation === '') return '';
  return `${pos.generation}/${formatIndex(pos.index)}:${pos.offset}`;
}

/** Formats a WAL index as 8 lowercase hex digits, as object keys and logs spell it. */
export function formatIndex(index: number): string {
  return index.toString(16).padStart(8, '0');
}

/** Compares two positions of one generation by index, then offset. */
export function comparePos(a: Pos, b: Pos): number {
  if (a.index !== b.index) return a.index - b.index;
  return a.offset - b.offset;
}

/** Reports whether two positions are equal, generation included. */
export function posEqual(a: Pos, b: Pos): boolean {
  return a.generation === b.generation && a.index === b.index && a.offset === b.offset;
}
