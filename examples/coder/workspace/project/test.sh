# test.sh: the tests of calc.sh; exits 1 if any fails
. ./calc.sh
failed=0
check() {
    if [ "$2" = "$3" ]; then echo "ok: $1"; else echo "FAIL: $1: expected $3, got $2"; failed=1; fi
}
check "add 2 3" "$(add 2 3)" 5
check "mul 2 3" "$(mul 2 3)" 6
check "mul 4 5" "$(mul 4 5)" 20
exit $failed
