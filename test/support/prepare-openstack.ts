/**
 * Builds the Keystone and Glance templates the Glance tests start from (test/support/openstack.ts):
 * run by scripts/setup.sh once per machine and package version, so no test file pays for
 * `db_sync`, the key repositories or the bootstrap.
 */
import { prepareOpenStackTemplates } from './openstack.js';

await prepareOpenStackTemplates();
