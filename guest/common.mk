# Shared by the ring-0 guest images built for the -2 GiB kernel link address (guest/kernel,
# guest/samples/smp-demo, guest/samples/bits): toolchain, flags, and the formatter from guest/lib.
# (guest/samples/compute keeps its own flags: they must match its native build for benchmarks.)

GUEST_DIR := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))

CC ?= gcc
LD := ld
ifeq ($(origin CC),default)
CC := gcc
endif

# No SSE/x87 anywhere (-mgeneral-regs-only), no CET endbr64 (-fcf-protection=none), kernel code
# model for the -2 GiB link address, no red zone (interrupts share the stack), frame pointers kept
# (a DBT's switchoff walks stacks). The prefix maps keep host paths out of the objects.
RING0_CFLAGS := -std=gnu11 -O2 -Wall -Wextra \
                -ffreestanding -nostdlib -fno-builtin -static \
                -mcmodel=kernel -mno-red-zone -mgeneral-regs-only \
                -fno-pic -fno-pie -fno-stack-protector -fno-stack-check \
                -fno-asynchronous-unwind-tables -fno-unwind-tables \
                -fno-omit-frame-pointer -fcf-protection=none \
                -ffile-prefix-map=$(CURDIR)/= -ffile-prefix-map=$(GUEST_DIR)/=guest/ \
                -I$(GUEST_DIR)/lib
RING0_ASFLAGS := $(filter-out -std=gnu11 -O2 -Wextra,$(RING0_CFLAGS))
RING0_LDFLAGS := -nostdlib -static --build-id=none -z max-page-size=0x1000 -z noexecstack

FMT_SRC := $(GUEST_DIR)/lib/fmt.c $(GUEST_DIR)/lib/fmt.h
