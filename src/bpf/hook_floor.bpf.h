/* For the benchmark's hook floor (sockscope-bench --hooks-only, sensor flag
 * --hook-floor): every program returns at once, so a run measures what the
 * hook points alone cost a workload, the part no program body can win back.
 * Read-only data, so the verifier removes the rest of each program. */
#ifndef SOCKSCOPE_HOOK_FLOOR_H
#define SOCKSCOPE_HOOK_FLOOR_H

const volatile bool hook_floor = false;

/* First statement of every program: `allow` is its do-nothing return value. */
#define HOOK_FLOOR_RETURN(allow)                                                                   \
	do {                                                                                       \
		if (hook_floor)                                                                    \
			return (allow);                                                            \
	} while (0)

#endif
