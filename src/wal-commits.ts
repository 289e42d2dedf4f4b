import fs from 'node:fs';

import { FRAME_HEADER_SIZE, WAL_HEADER_SIZE, frameSize } from './wal.js';

/**
 * Counts the frames of a WAL byte range, `start` to `end` of a (shadow) WAL
 * file. A range that starts at offset 0 begins with the WAL header, which is
 * not a frame.
 */
export function countFrames(start: number, end: number, pageSize: number): number {
  const first = start === 0 ? WAL_HEADER_SIZE : start;
  return Math.max(0, Math.floor((end - first) / frameSize(pageSize)));
}

/**
 * Counts the commit frames (transactions) in a range of a WAL file by reading
 * each frame's 24-byte header: a frame commits when its "database size after
 * commit" field is not 0. Reads one header per frame, not the pages.
 * Throws when the file cannot be read, for example after it was removed.
 */
export function countCommits(file: string, start: number, end: number, pageSize: number): number {
  const size = frameSize(pageSize);
  const header = Buffer.alloc(FRAME_HEADER_SIZE);
  const fd = fs.openSync(file, 'r');
  try {
    let commits = 0;
    for (let offset = start === 0 ? WAL_HEADER_SIZE : start; offset + size <= end; offset += size) {
      if (fs.readSync(fd, header, 0, FRAME_HEADER_SIZE, offset) < FRAME_HEADER_SIZE) break;
      if (header.readUInt32BE(4) !== 0) commits++;
    }
    return commits;
  } finally {
    fs.closeSync(fd);
  }
}
