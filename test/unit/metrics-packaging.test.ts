import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { stringify } from 'yaml';
import { ALERT_RULES, loadAlertRules, loadDashboard, metricNamesOf, packagedExpressions } from '../support/metrics.js';

/** promtool (Debian's `prometheus` package) when installed; the checks that need it say so when it is not. */
const promtool = await execa('promtool', ['--version'], { reject: false }).then(
  (r) => r.exitCode === 0,
  () => false,
);

/**
 * The Grafana dashboard and the Prometheus alert rules of packaging/: well-formed, and every
 * expression naming metrics (that each is exported is checked against real scrapes in
 * test/e2e/metrics.test.ts). With promtool, the rules pass `promtool check rules`, and the
 * alerts fire (and stay quiet) on series made up for the purpose.
 */
describe('the packaged dashboard and alert rules', () => {
  test('the dashboard is a Grafana dashboard: uid, schema version, a Prometheus datasource variable, panels on the grid with PromQL targets', async () => {
    const dashboard = await loadDashboard();
    expect(dashboard.uid).toBe('snf-vmcatcher');
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(dashboard.templating.list).toContainEqual(
      expect.objectContaining({ name: 'datasource', type: 'datasource', query: 'prometheus' }),
    );
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const panel of dashboard.panels) {
      const { x, y, w, h } = panel.gridPos;
      expect([panel.title, x >= 0 && w > 0 && x + w <= 24 && y >= 0 && h > 0]).toEqual([panel.title, true]);
      if (panel.type === 'row') continue;
      expect(['timeseries', 'stat', 'table']).toContain(panel.type);
      expect(panel.datasource).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(panel.targets?.length).toBeGreaterThan(0);
      const refIds = panel.targets!.map((t) => t.refId);
      expect(new Set(refIds).size).toBe(refIds.length);
    }
    // No two panels overlap on the grid.
    const cells = new Set<string>();
    for (const { title, gridPos } of dashboard.panels) {
      for (let dx = 0; dx < gridPos.w; dx++)
        for (let dy = 0; dy < gridPos.h; dy++) {
          const cell = `${gridPos.x + dx},${gridPos.y + dy}`;
          expect([title, cells.has(cell)]).toEqual([title, false]);
          cells.add(cell);
        }
    }
  });

  test('the dashboard shows images, failures by kind, every step, slot and disk waits, subscriptions, dead letters and hosts', async () => {
    const named = new Set((await packagedExpressions()).flatMap((e) => metricNamesOf(e.expr)));
    for (const name of [
      'snf_vmcatcher_images_registered_total',
      'snf_vmcatcher_images_failed_total',
      'snf_vmcatcher_images_expired_total',
      'snf_vmcatcher_downloaded_bytes_total',
      'snf_vmcatcher_step_duration_seconds_bucket',
      'snf_vmcatcher_images_waiting_for_slot',
      'snf_vmcatcher_images_waiting_for_disk',
      'snf_vmcatcher_subscription_syncs_total',
      'snf_vmcatcher_subscription_last_success_timestamp_seconds',
      'snf_vmcatcher_bridge_dead_letter_messages',
      'up',
    ])
      expect([name, named.has(name)]).toEqual([name, true]);
  });

  test('every alert has an expression, a severity and a summary', async () => {
    const rules = await loadAlertRules();
    const alerts = rules.groups.flatMap((g) => g.rules);
    expect(alerts.map((a) => a.alert)).toEqual(
      expect.arrayContaining([
        'SnfVmcatcherSubscriptionNotSynced',
        'SnfVmcatcherFailuresRising',
        'SnfVmcatcherDeadLetters',
        'SnfVmcatcherHostGone',
      ]),
    );
    for (const alert of alerts) {
      expect([alert.alert, metricNamesOf(alert.expr).length > 0]).toEqual([alert.alert, true]);
      expect(['warning', 'critical']).toContain(alert.labels?.severity);
      expect(alert.annotations?.summary).toBeTruthy();
    }
  });

  (promtool ? test : test.skip)('promtool check rules accepts the rules file', async () => {
    const result = await execa('promtool', ['check', 'rules', ALERT_RULES], { reject: false });
    expect(result.stdout + result.stderr).toMatch(/SUCCESS/);
    expect(result.exitCode).toBe(0);
  });

  (promtool ? test : test.skip)(
    'promtool test rules: the alerts fire on the series that should raise them, and not on healthy ones',
    async () => {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'snf-rules-'));
      try {
        const sub = 'https://lists.example.org/a.list';
        const quiet = 'https://lists.example.org/b.list';
        const never = 'https://lists.example.org/c.list';
        const w = 'instance="w1:9470", job="snf-vmcatcher-worker"';
        const rules = (await loadAlertRules()).groups.flatMap((g) => g.rules);
        /** The rule's annotations as Prometheus renders them: the summary given, the description as written (no template in it). */
        const annotations = (alert: string, summary: string, description?: string) => ({
          summary,
          description: description ?? rules.find((r) => r.alert === alert)!.annotations!.description,
        });
        const notSynced = (subscription: string, age: string) => ({
          exp_labels: { severity: 'warning', subscription },
          exp_annotations: annotations(
            'SnfVmcatcherSubscriptionNotSynced',
            `Subscription ${subscription} not synced for more than twice its interval`,
            `No successful sync of ${subscription} for ${age}. \`snf-vmcatcher subscriptions\` shows its last runs; a refused list (signature, endorser) or an unreachable URL is in the run's failure in the Web UI.`,
          ),
        });
        const tests = {
          rule_files: [ALERT_RULES],
          evaluation_interval: '1m',
          tests: [
            {
              interval: '1m',
              input_series: [
                // a.list: 1 h interval, last success at t=0 (the scrape at 0 s): overdue after 2 h.
                {
                  series: `snf_vmcatcher_subscription_interval_seconds{subscription="${sub}", ${w}}`,
                  values: '3600+0x200',
                },
                {
                  series: `snf_vmcatcher_subscription_last_success_timestamp_seconds{subscription="${sub}", ${w}}`,
                  values: '0+0x200',
                },
                {
                  series: `snf_vmcatcher_subscription_created_timestamp_seconds{subscription="${sub}", ${w}}`,
                  values: '0+0x200',
                },
                // b.list: synced every minute, never overdue.
                {
                  series: `snf_vmcatcher_subscription_interval_seconds{subscription="${quiet}", ${w}}`,
                  values: '3600+0x200',
                },
                {
                  series: `snf_vmcatcher_subscription_last_success_timestamp_seconds{subscription="${quiet}", ${w}}`,
                  values: '0+60x200',
                },
                {
                  series: `snf_vmcatcher_subscription_created_timestamp_seconds{subscription="${quiet}", ${w}}`,
                  values: '0+0x200',
                },
                // c.list: created at 0, never synced: overdue from its creation.
                {
                  series: `snf_vmcatcher_subscription_interval_seconds{subscription="${never}", ${w}}`,
                  values: '1800+0x200',
                },
                {
                  series: `snf_vmcatcher_subscription_created_timestamp_seconds{subscription="${never}", ${w}}`,
                  values: '0+0x200',
                },
                // Four failed registrations in a few minutes, none registered.
                {
                  series: `snf_vmcatcher_images_failed_total{cloud="synnefo-site", action="register", kind="FetchError", ${w}}`,
                  values: '0 1 2 3 4+0x200',
                },
                {
                  series: `snf_vmcatcher_bridge_dead_letter_messages{instance="b1:9465", job="snf-vmcatcher-bridge"}`,
                  values: '0 0 2+0x200',
                },
                { series: `up{${w}}`, values: '1 1 0+0x200' },
              ],
              alert_rule_test: [
                {
                  eval_time: '100m',
                  alertname: 'SnfVmcatcherSubscriptionNotSynced',
                  exp_alerts: [notSynced(never, '1h 40m 0s')],
                },
                {
                  eval_time: '130m',
                  alertname: 'SnfVmcatcherSubscriptionNotSynced',
                  exp_alerts: [notSynced(sub, '2h 10m 0s'), notSynced(never, '2h 10m 0s')],
                },
                {
                  eval_time: '10m',
                  alertname: 'SnfVmcatcherFailuresRising',
                  exp_alerts: [
                    {
                      exp_labels: { severity: 'critical', cloud: 'synnefo-site' },
                      exp_annotations: annotations(
                        'SnfVmcatcherFailuresRising',
                        'Most registrations on synnefo-site fail',
                      ),
                    },
                  ],
                },
                { eval_time: '3m', alertname: 'SnfVmcatcherDeadLetters', exp_alerts: [] },
                {
                  eval_time: '10m',
                  alertname: 'SnfVmcatcherDeadLetters',
                  exp_alerts: [
                    {
                      exp_labels: { severity: 'warning' },
                      exp_annotations: annotations('SnfVmcatcherDeadLetters', '2 messages in the dead-letter queue'),
                    },
                  ],
                },
                { eval_time: '4m', alertname: 'SnfVmcatcherHostGone', exp_alerts: [] },
                {
                  eval_time: '10m',
                  alertname: 'SnfVmcatcherHostGone',
                  exp_alerts: [
                    {
                      exp_labels: { severity: 'critical', instance: 'w1:9470', job: 'snf-vmcatcher-worker' },
                      exp_annotations: annotations('SnfVmcatcherHostGone', 'Worker w1:9470 does not answer'),
                    },
                  ],
                },
              ],
            },
          ],
        };
        const file = path.join(dir, 'rules.test.yml');
        await writeFile(file, stringify(tests));
        const result = await execa('promtool', ['test', 'rules', file], { reject: false });
        expect(result.stdout + result.stderr).toMatch(/SUCCESS/);
        expect(result.exitCode).toBe(0);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  );
});
