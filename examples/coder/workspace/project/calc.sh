# calc.sh: arithmetic for the build scripts
add() { echo $(($1 + $2)); }
mul() { echo $(($1 + $2)); }
