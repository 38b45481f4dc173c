// Stores, searches and retrieves DICOM instances through Consilium's
// DICOMweb API with dicomweb-client, the library OHIF uses, over mutual
// TLS. interop_test.go starts a gateway and runs this script; it reads:
//
//   CONSILIUM_URL   the gateway, https://host:port
//   CONSILIUM_CERT  client certificate, CONSILIUM_KEY its key, CONSILIUM_CA
//   OUT_DIR         where retrieved instances are written
//   argv            the files to store (a refused one is given after
//                   --invalid)
//
// and prints one JSON object with what the server answered.
'use strict';

const fs = require('fs');
const https = require('https');
const path = require('path');
const XMLHttpRequest = require('xhr2');
const { api } = require('dicomweb-client');

const agent = new https.Agent({
  cert: fs.readFileSync(process.env.CONSILIUM_CERT),
  key: fs.readFileSync(process.env.CONSILIUM_KEY),
  ca: fs.readFileSync(process.env.CONSILIUM_CA),
  minVersion: 'TLSv1.3',
});
XMLHttpRequest.nodejsSet({ httpsAgent: agent });
global.XMLHttpRequest = XMLHttpRequest;

function arrayBuffer(file) {
  const b = fs.readFileSync(file);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
}

function first(ds, tag) {
  const a = ds[tag];
  return a && a.Value && a.Value.length ? a.Value[0] : undefined;
}

async function main() {
  const args = process.argv.slice(2);
  const cut = args.indexOf('--invalid');
  const valid = cut < 0 ? args : args.slice(0, cut);
  const invalid = cut < 0 ? [] : args.slice(cut + 1);
  const client = new api.DICOMwebClient({ url: process.env.CONSILIUM_URL + '/dicomweb' });
  const out = { stored: {}, failed: [], studies: [], retrieved: {}, bulkData: {} };

  // STOW-RS: everything in one request; the refused ones do not stop the
  // others (202).
  const answer = await client.storeInstances({ datasets: valid.concat(invalid).map(arrayBuffer) });
  const stow = typeof answer === 'string' ? JSON.parse(answer) : JSON.parse(Buffer.from(answer).toString());
  for (const item of (stow['00081199'] || {}).Value || []) {
    out.stored[first(item, '00081155')] = first(item, '00081190');
  }
  for (const item of (stow['00081198'] || {}).Value || []) {
    out.failed.push({ sop: first(item, '00081155'), reason: first(item, '00081197') });
  }

  // QIDO-RS: every study, then each study's series and instances.
  const studies = await client.searchForStudies();
  for (const st of studies) {
    const study = first(st, '0020000D');
    const entry = { study, patientID: first(st, '00100020'), modalities: (st['00080061'] || {}).Value || [], series: [] };
    const series = await client.searchForSeries({ studyInstanceUID: study });
    for (const se of series) {
      const seriesUID = first(se, '0020000E');
      const instances = await client.searchForInstances({ studyInstanceUID: study, seriesInstanceUID: seriesUID });
      entry.series.push({ series: seriesUID, instances: instances.map((i) => first(i, '00080018')) });
      // WADO-RS: each instance, and its metadata and pixel data bulk data.
      for (const inst of instances) {
        const sop = first(inst, '00080018');
        const parts = await client.retrieveInstance({ studyInstanceUID: study, seriesInstanceUID: seriesUID, sopInstanceUID: sop });
        const file = path.join(process.env.OUT_DIR, sop + '.dcm');
        fs.writeFileSync(file, Buffer.from(parts[0] || parts));
        out.retrieved[sop] = file;
        const [md] = await client.retrieveInstanceMetadata({ studyInstanceUID: study, seriesInstanceUID: seriesUID, sopInstanceUID: sop });
        const pixel = md['7FE00010'];
        if (pixel && pixel.BulkDataURI) {
          const bulk = await client.retrieveBulkData({ BulkDataURI: pixel.BulkDataURI });
          out.bulkData[sop] = bulk[0].byteLength;
        }
      }
    }
    out.studies.push(entry);
  }
  // A whole study in one multipart answer.
  if (studies.length > 0) {
    const study = first(studies[0], '0020000D');
    const all = await client.retrieveStudy({ studyInstanceUID: study });
    out.wholeStudy = { study, instances: all.length };
  }
  // A search narrowed by Patient ID.
  if (studies.length > 0) {
    const pid = first(studies[0], '00100020');
    const found = await client.searchForStudies({ queryParams: { PatientID: pid } });
    out.byPatientID = { patientID: pid, studies: found.length };
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch((err) => {
  process.stderr.write('dicomweb-client failed: ' + (err.stack || err) + (err.status ? ' (HTTP ' + err.status + ')' : '') + '\n');
  if (err.response) {
    process.stderr.write(Buffer.from(err.response).toString() + '\n');
  }
  process.exit(1);
});
