import { chooseOvfDisk } from '../../activities/ovf.js';
import { ovfFor } from '../support/pipeline-fixtures.js';

describe('chooseOvfDisk picks the boot disk the OVF describes, not the first file', () => {
  test('one disk', () => {
    expect(chooseOvfDisk(ovfFor([{ href: 'disk1.vmdk', address: 0 }]))).toMatchObject({
      href: 'disk1.vmdk',
      others: [],
    });
  });

  test('two disks: the one at address 0 wins although it is second in References', () => {
    const choice = chooseOvfDisk(
      ovfFor([
        { href: 'data.vmdk', address: 1 },
        { href: 'boot.vmdk', address: 0 },
      ]),
    );
    expect(choice).toMatchObject({ href: 'boot.vmdk', others: ['data.vmdk'] });
    expect(choice.reason).toMatch(/virtual hardware/);
  });

  test('disks on two controllers: the controller with the lower address comes first', () => {
    const xml = `<Envelope xmlns:ovf="o" xmlns:rasd="r"><References><File ovf:id="f1" ovf:href="scsi.vmdk"/><File ovf:id="f2" ovf:href="ide.vmdk"/></References>
      <DiskSection><Disk ovf:diskId="d1" ovf:fileRef="f1"/><Disk ovf:diskId="d2" ovf:fileRef="f2"/></DiskSection>
      <VirtualSystem ovf:id="vm"><VirtualHardwareSection>
        <Item><rasd:Address>1</rasd:Address><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>6</rasd:ResourceType></Item>
        <Item><rasd:Address>0</rasd:Address><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>5</rasd:ResourceType></Item>
        <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:HostResource>ovf:/disk/d1</rasd:HostResource><rasd:InstanceID>7</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
        <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:HostResource>ovf:/disk/d2</rasd:HostResource><rasd:InstanceID>8</rasd:InstanceID><rasd:Parent>4</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      </VirtualHardwareSection></VirtualSystem></Envelope>`;
    expect(chooseOvfDisk(xml)).toMatchObject({ href: 'ide.vmdk', others: ['scsi.vmdk'] });
  });

  test('without hardware items, the DiskSection order counts', () => {
    const xml = `<ovf:Envelope xmlns:ovf="o"><ovf:References><ovf:File ovf:id="a" ovf:href="second.vmdk"/><ovf:File ovf:id="b" ovf:href="first.vmdk"/></ovf:References>
      <ovf:DiskSection><ovf:Disk ovf:diskId="x" ovf:fileRef="b"/><ovf:Disk ovf:diskId="y" ovf:fileRef="a"/></ovf:DiskSection></ovf:Envelope>`;
    expect(chooseOvfDisk(xml)).toMatchObject({
      href: 'first.vmdk',
      others: ['second.vmdk'],
      reason: expect.stringMatching(/DiskSection/),
    });
  });

  test('without a DiskSection, the first referenced non-metadata file', () => {
    const xml = `<Envelope><References><File id="m" href="x.mf"/><File id="d" href="disk.img"/></References></Envelope>`;
    expect(chooseOvfDisk(xml).href).toBe('disk.img');
  });

  test.each([
    ['not XML', '<Envelope><References>'],
    ['no Envelope', '<Other/>'],
    ['no disk at all', '<Envelope><References/></Envelope>'],
  ])('%s is refused with an integrity error', (_name, xml) => {
    expect(() => chooseOvfDisk(xml)).toThrow(/OVF/);
  });
});
