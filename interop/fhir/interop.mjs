// Drives Consilium's FHIR API with fhir-kit-client, a standard FHIR client
// for JavaScript, over mutual TLS: capabilities, create, read, update,
// vread, search, transaction, delete and an error answer. The Go test
// gateway/fhir_interop_test.go starts a gateway and runs this script with:
//
//   CONSILIUM_FHIR_URL  the service base, https://127.0.0.1:<port>/fhir
//   CONSILIUM_CA        the CA certificate (PEM) that signed the server's
//   CONSILIUM_CERT      the client certificate (PEM) of a hospital principal
//   CONSILIUM_KEY       its private key (PEM)
//
// It prints one line per step and exits non-zero at the first failure.
import { readFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import { Client } from 'fhir-kit-client';
import { Agent, setGlobalDispatcher } from 'undici';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

// fhir-kit-client uses Node's fetch; mutual TLS is configured on fetch's
// dispatcher.
setGlobalDispatcher(new Agent({
  connect: {
    ca: readFileSync(env('CONSILIUM_CA')),
    cert: readFileSync(env('CONSILIUM_CERT')),
    key: readFileSync(env('CONSILIUM_KEY')),
    minVersion: 'TLSv1.3',
  },
}));

const client = new Client({ baseUrl: env('CONSILIUM_FHIR_URL') });
const step = (name) => console.log(`ok ${name}`);

const cs = await client.capabilityStatement();
assert.equal(cs.resourceType, 'CapabilityStatement');
assert.equal(cs.fhirVersion, '4.0.1');
step('capabilities');

const patient = await client.create({
  resourceType: 'Patient',
  body: {
    resourceType: 'Patient',
    identifier: [{ system: 'urn:interop:mrn', value: 'kit-1' }],
    name: [{ family: 'Kit', given: ['Client'] }],
    birthDate: '1970-01-01',
  },
});
assert.equal(patient.resourceType, 'Patient');
assert.ok(patient.id, 'created Patient has an id');
assert.equal(patient.meta.versionId, '1');
step('create');

const read = await client.read({ resourceType: 'Patient', id: patient.id });
assert.deepEqual(read.name, [{ family: 'Kit', given: ['Client'] }]);
step('read');

const updated = await client.update({
  resourceType: 'Patient',
  id: patient.id,
  body: { ...read, gender: 'female', meta: undefined },
});
assert.equal(updated.meta.versionId, '2');
assert.equal(updated.gender, 'female');
step('update');

const v1 = await client.vread({ resourceType: 'Patient', id: patient.id, version: '1' });
assert.equal(v1.gender, undefined);
step('vread');

await client.create({
  resourceType: 'Observation',
  body: {
    resourceType: 'Observation',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '29463-7', display: 'Body weight' }] },
    subject: { reference: `Patient/${patient.id}` },
    valueQuantity: { value: 72.5, unit: 'kg', system: 'http://unitsofmeasure.org', code: 'kg' },
  },
});
const found = await client.search({ resourceType: 'Observation', searchParams: { patient: patient.id } });
assert.equal(found.resourceType, 'Bundle');
assert.equal(found.type, 'searchset');
assert.equal(found.total, 1);
assert.equal(found.entry[0].resource.valueQuantity.value, 72.5);
step('search');

const tx = await client.transaction({
  body: {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      {
        fullUrl: 'urn:uuid:5b1c0c7e-7d1f-4b8e-9a51-0c1d2e3f4a5b',
        resource: { resourceType: 'Patient', name: [{ family: 'Bundle' }] },
        request: { method: 'POST', url: 'Patient' },
      },
      {
        resource: {
          resourceType: 'Condition',
          subject: { reference: 'urn:uuid:5b1c0c7e-7d1f-4b8e-9a51-0c1d2e3f4a5b' },
          code: { text: 'second opinion requested' },
        },
        request: { method: 'POST', url: 'Condition' },
      },
    ],
  },
});
assert.equal(tx.type, 'transaction-response');
assert.equal(tx.entry.length, 2);
for (const e of tx.entry) assert.equal(e.response.status, '201 Created');
const [ptype, pid] = tx.entry[0].response.location.split('/');
const [ctype, cid] = tx.entry[1].response.location.split('/');
const condition = await client.read({ resourceType: ctype, id: cid });
assert.equal(condition.subject.reference, `${ptype}/${pid}`);
step('transaction');

await client.delete({ resourceType: 'Condition', id: cid });
await assert.rejects(client.read({ resourceType: 'Condition', id: cid }), (err) => {
  assert.equal(err.response.status, 410);
  return true;
});
step('delete');

await assert.rejects(client.read({ resourceType: 'Patient', id: 'does-not-exist' }), (err) => {
  assert.equal(err.response.status, 404);
  assert.equal(err.response.data.resourceType, 'OperationOutcome');
  return true;
});
step('error as OperationOutcome');
