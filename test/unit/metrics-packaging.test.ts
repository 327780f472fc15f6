import { loadAlertRules, loadDashboard, metricNamesOf, packagedExpressions } from '../support/metrics.js';

/**
 * The Grafana dashboard and the Prometheus alert rules of packaging/: well-formed, and every
 * expression naming metrics (that each is exported is checked against real scrapes in
 * test/e2e/metrics.test.ts). promtool's checks of the rules are in
 * test/integration/alert-rules.test.ts (they need Debian's prometheus package, which setup installs).
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
});
