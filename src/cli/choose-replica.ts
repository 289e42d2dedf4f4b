import type { ReplicaConfig } from '../config.js';
import { describeError } from '../errors.js';
import type { Logger } from '../logger.js';
import { createReplicaClient } from '../replica/create.js';
import { planRestore } from '../restore/plan.js';
import type { PlanTarget } from '../restore/plan.js';

/**
 * Picks, among the replicas of one database, the one whose restore would
 * start from the newest backup. Each replica is planned as the restore would
 * plan it. The plan whose
 * generation has the newest object wins, and a tie keeps the earlier replica.
 * A replica that cannot be read is logged and passed over. When none can be
 * read, the first replica's error is thrown.
 */
export async function chooseNewestReplica(replicas: ReplicaConfig[], target: PlanTarget, logger: Logger): Promise<ReplicaConfig> {
  let best: { replica: ReplicaConfig; updatedAt: Date; generation: string } | undefined;
  let firstError: unknown;

  for (const replica of replicas) {
    const client = createReplicaClient(replica.client);
    try {
      const plan = await planRestore(client, target);
      if (best === undefined || plan.updatedAt > best.updatedAt) best = { replica, updatedAt: plan.updatedAt, generation: plan.generation };
    } catch (err) {
      firstError ??= err;
      logger.warn({ replica: replica.name, location: client.location, err: describeError(err) }, 'replica passed over: nothing to restore from it');
    } finally {
      await client.close();
    }
  }

  if (best === undefined) throw firstError;
  logger.info(
    { replica: best.replica.name, generation: best.generation, updatedAt: best.updatedAt.toISOString() },
    'restoring from the replica with the newest backup',
  );
  return best.replica;
}
