package main

// docTemplate starts docs/BENCHMARKS.md when it does not exist.
const docTemplate = `# Benchmarks

gatewayd's broker measured beside Mosquitto and mochi-mqtt on the same machine.
Reproduce with ` + "`make bench`" + `; the section below is generated.
`
