import type { ReplicaClient, ReplicaClientConfig } from './client.js';
import { FileReplicaClient } from './file-client.js';
import { S3ReplicaClient } from './s3-client.js';

/** Builds the replica client that a config describes. */
export function createReplicaClient(config: ReplicaClientConfig): ReplicaClient {
  switch (config.type) {
    case 'file':
      return new FileReplicaClient(config);
    case 's3':
      return new S3ReplicaClient(config);
    default: {
      const unknown: never = config;
      throw new Error(`unknown replica type ${JSON.stringify((unknown as { type?: unknown }).type)}`);
    }
  }
}
