;; A service that always fails: `unreachable` traps (TRAP_UNREACHABLE, 4001).
(module
  (memory (export "memory") 1)
  (func (export "run") unreachable))
