# bash completion for cryptshift
# Generated from the command definitions; do not edit.
_cryptshift() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd= i
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		-*) ;;
		*) cmd=${COMP_WORDS[i]}; break ;;
		esac
	done
	case $cmd in
	'') COMPREPLY=($(compgen -W 'convert recover verify status demo bench --help -h --version -v' -- "$cur")); return ;;
	convert)
		case $prev in
		--old-key-file|--new-key-file|--metadata|--metrics-file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
		--old-cipher|--old-sector-size|--old-iv-offset|--new-cipher|--new-sector-size|--new-iv-offset|--data-offset|--data-size|--metadata-size|--resilience|--window|--shift|--progress|--progress-interval|--key-file|--key-slot|--new-key-size|--online|--crypto|--new-like) COMPREPLY=(); return ;;
		esac
		case $cur in
		-*) COMPREPLY=($(compgen -W '--old-cipher --old-sector-size --old-iv-offset --old-iv-large-sectors --new-cipher --new-sector-size --new-iv-offset --new-iv-large-sectors --old-key-file --new-key-file --data-offset --data-size --metadata --metadata-size --resilience --window --shift --force --progress --progress-interval --key-file --key-slot --new-key-size --decrypt --online --crypto --new-like --metrics-file --help -h' -- "$cur")) ;;
		*) COMPREPLY=($(compgen -f -- "$cur")) ;;
		esac
		;;
	recover)
		case $prev in
		--metadata|--old-key-file|--new-key-file|--tab) COMPREPLY=($(compgen -f -- "$cur")); return ;;
		--key-file|--activate|--table-options|--wait) COMPREPLY=(); return ;;
		esac
		case $cur in
		-*) COMPREPLY=($(compgen -W '--metadata --key-file --old-key-file --new-key-file --accept-damage --activate --table-options --all --tab --wait --help -h' -- "$cur")) ;;
		*) COMPREPLY=($(compgen -f -- "$cur")) ;;
		esac
		;;
	verify)
		case $prev in
		--metadata|--old-key-file|--new-key-file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
		--key-file|--online) COMPREPLY=(); return ;;
		esac
		case $cur in
		-*) COMPREPLY=($(compgen -W '--metadata --key-file --old-key-file --new-key-file --data --online --repair --help -h' -- "$cur")) ;;
		*) COMPREPLY=($(compgen -f -- "$cur")) ;;
		esac
		;;
	status)
		case $prev in
		--metadata) COMPREPLY=($(compgen -f -- "$cur")); return ;;
		esac
		case $cur in
		-*) COMPREPLY=($(compgen -W '--metadata --json --help -h' -- "$cur")) ;;
		*) COMPREPLY=($(compgen -f -- "$cur")) ;;
		esac
		;;
	demo)
		case $prev in
		--dir) COMPREPLY=($(compgen -f -- "$cur")); return ;;
		--size|--progress|--progress-interval) COMPREPLY=(); return ;;
		esac
		case $cur in
		-*) COMPREPLY=($(compgen -W '--dir --size --progress --progress-interval --help -h' -- "$cur")) ;;
		esac
		;;
	bench)
		case $prev in
		--dir) COMPREPLY=($(compgen -f -- "$cur")); return ;;
		--cipher|--time|--repeat|--convert|--mode|--window|--sector-size) COMPREPLY=(); return ;;
		esac
		case $cur in
		-*) COMPREPLY=($(compgen -W '--cipher --time --repeat --convert --dir --mode --window --sector-size --flushed-copy --verify --json --help -h' -- "$cur")) ;;
		esac
		;;
	esac
}
complete -o filenames -F _cryptshift cryptshift
