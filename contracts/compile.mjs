// Compiles contracts/*.sol with the solc of package.json and writes contracts/artifacts/<Name>.json.
//
//     npm ci && node contracts/compile.mjs
//
// Each artifact holds the ABI, the creation and runtime bytecode, the compiler version and
// settings, and the sha256 of its source file; tests/unit/actors/payment checks that the
// committed artifacts match the sources, so a source change without a recompile fails there.
// Sources are compiled under their bare file names, so the output holds no machine paths.
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const here = dirname(fileURLToPath(import.meta.url));
const outDir = join(here, "artifacts");

const settings = {
    evmVersion: "paris",
    optimizer: { enabled: true, runs: 200 },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

const files = readdirSync(here).filter((f) => f.endsWith(".sol")).sort();
const sources = {};
for (const f of files) sources[f] = { content: readFileSync(join(here, f), "utf8") };

const output = JSON.parse(solc.compile(JSON.stringify({ language: "Solidity", sources, settings })));
const problems = (output.errors || []).filter((e) => e.severity === "error" || e.type === "Warning");
for (const e of problems) console.error(e.formattedMessage);
if ((output.errors || []).some((e) => e.severity === "error")) process.exit(1);

mkdirSync(outDir, { recursive: true });
for (const f of files) {
    const sha256 = createHash("sha256").update(readFileSync(join(here, f))).digest("hex");
    for (const [name, c] of Object.entries(output.contracts[f] || {})) {
        if (!c.evm.bytecode.object) continue; // interfaces and abstract contracts
        const artifact = {
            contractName: name,
            sourceName: f,
            sourceSha256: sha256,
            compiler: { name: "solc", version: solc.version(), evmVersion: settings.evmVersion, optimizer: settings.optimizer },
            abi: c.abi,
            bytecode: "0x" + c.evm.bytecode.object,
            deployedBytecode: "0x" + c.evm.deployedBytecode.object,
        };
        writeFileSync(join(outDir, `${name}.json`), JSON.stringify(artifact, null, 2) + "\n");
        console.log(`compiled ${f}:${name} -> contracts/artifacts/${name}.json`);
    }
}
