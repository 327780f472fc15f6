import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { stringify } from 'yaml';
import { ALERT_RULES, loadAlertRules } from '../support/metrics.js';

/**
 * The Prometheus alert rules of packaging/ checked by Prometheus's own promtool (Debian's
 * `prometheus` package, installed by scripts/setup.sh): the file passes `promtool check rules`,
 * and the alerts fire (and stay quiet) on series made up for the purpose.
 */
describe('the packaged alert rules, by promtool', () => {
  test('promtool check rules accepts the rules file', async () => {
    const result = await execa('promtool', ['check', 'rules', ALERT_RULES], { reject: false });
    expect(result.stdout + result.stderr).toMatch(/SUCCESS/);
    expect(result.exitCode).toBe(0);
  });

  test('promtool test rules: the alerts fire on the series that should raise them, and not on healthy ones', async () => {
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
  });
});
